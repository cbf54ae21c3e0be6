"""The README is true: its examples are the scripts in examples/, and they run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
README_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def example_body(name: str) -> str:
    """The example script without its module docstring (what the README shows)."""
    return (ROOT / "examples" / name).read_text().split('"""\n\n', 1)[1]


def run_example(name: str, cwd: Path) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def test_readme_examples_are_the_scripts() -> None:
    assert README_BLOCKS[0] == example_body("quickstart.py")
    assert example_body("seed_app.py") in README_BLOCKS
    assert example_body("alert_failed.py") in README_BLOCKS


def test_quickstart_runs(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path)
    assert "completed 100% step 5/5" in out
    assert "result: {'answer': 42}" in out
    assert (tmp_path / "batch_status" / "demo-job.json").exists()


def test_seed_app_runs(tmp_path: Path) -> None:
    out = run_example("seed_app.py", tmp_path)
    assert "Test: failed 75% (3 completed, 1 failed)" in out  # 100% only when all completed
    assert "completed {'text': 'CAT'}" in out
    assert "ValueError: cannot generate 'bad'" in out
    assert "cancelled: 4" in out
    assert "second batch: cancelled" in out
    assert len(list((tmp_path / "batches").glob("*.json"))) == 2  # and the hidden .lock-NN


def test_readme_starts_with_the_two_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^(python3 -m venv .*)$", README, re.M)
    assert len(commands) == 2
    assert commands[1] in ci  # CI runs exactly the README's test command


def test_scale_out_example_runs(redis_url: str, tmp_path: Path) -> None:
    """The README's "Scale out" script: a LocalCluster of 2 worker processes, status on Redis."""
    pytest.importorskip("distributed")
    assert "python examples/scale_out.py" in README
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "scale_out.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "STATUSBRIDGE_DIR": redis_url},
    ).stdout  # fmt: skip
    assert out.count("completed frame") == 4
    assert os.listdir(tmp_path) == []  # nothing written beside the script's working directory
