"""The README's example is true: it is the quickstart script, and it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_is_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    assert blocks[0] == (ROOT / "examples" / "quickstart.py").read_text().split('"""\n\n', 1)[1]


def test_readme_jobs_example_is_the_seed_app() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    seed = (ROOT / "examples" / "seed_app.py").read_text().split('"""\n\n', 1)[1]
    assert seed in blocks


def test_seed_app_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_app.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "Test: failed 100% (3 completed, 1 failed)" in out
    assert "completed {'text': 'CAT'}" in out
    assert "ValueError: cannot generate 'bad'" in out
    assert "cancelled: 4" in out
    assert "second batch: cancelled" in out
    assert sorted(p.name for p in (tmp_path / "batches").iterdir())


def test_quickstart_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "completed 100% step 5/5" in out
    assert "result: {'answer': 42}" in out
    assert (tmp_path / "batch_status" / "demo-job.json").exists()


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^(python3 -m venv .*)$", readme, re.M)
    assert len(commands) == 2
    assert commands[1] in ci  # CI runs exactly the README's test command
