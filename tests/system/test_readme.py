"""The README and the docs site are true: their examples are the scripts in examples/, and they run.

Every ```python block of README.md and docs/**/*.md is either the body of a script in
examples/ (run by the tests below, or by the adapter's own tests) or a whole program,
which test_python_block_runs runs in an empty folder. Code that cannot run on its own
(a Streamlit page, a shell session) goes in a ```text or ```bash block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import statusbridge

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PAGES = {
    path.relative_to(ROOT).as_posix(): path.read_text()
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
}
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
README_BLOCKS = PYTHON_BLOCK.findall(README)


def example_body(name: str) -> str:
    """The example script without its module docstring (what the docs show)."""
    return (ROOT / "examples" / name).read_text().split('"""\n\n', 1)[1]


EXAMPLE_BODIES = {example_body(p.name): p.name for p in sorted((ROOT / "examples").glob("*.py"))}
# Blocks that are whole programs, not an example script's body: (page, index on the page).
PROGRAMS = [
    pytest.param(block, id=f"{page}-{n}")
    for page, text in PAGES.items()
    for n, block in enumerate(PYTHON_BLOCK.findall(text))
    if block not in EXAMPLE_BODIES
]


def run_example(name: str, cwd: Path) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def python_blocks(page: str) -> list[str]:
    return PYTHON_BLOCK.findall(PAGES[page])


def test_readme_examples_are_the_scripts() -> None:
    assert README_BLOCKS[0] == example_body("quickstart.py")


@pytest.mark.parametrize(
    ("page", "script"),
    [
        ("docs/getting-started.md", "quickstart.py"),
        ("docs/jobs.md", "seed_app.py"),
        ("docs/monitoring.md", "alert_failed.py"),
        ("docs/desktop.md", "qt_monitor.py"),  # run by tests/test_qt.py
        ("docs/scale-out.md", "scale_out.py"),
        ("docs/web.md", "fastapi_app.py"),  # run by tests/system/test_web_serve.py
    ],
)
def test_docs_show_the_example_scripts(page: str, script: str) -> None:
    assert example_body(script) in python_blocks(page)


@pytest.mark.parametrize("block", PROGRAMS)
def test_python_block_runs(block: str, tmp_path: Path) -> None:
    """A block that is not an example script's body runs as it stands, in an empty folder."""
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


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
    started = re.findall(r"^(python3 -m venv .*)$", PAGES["docs/getting-started.md"], re.M)
    assert started == commands


def test_api_reference_lists_every_public_name() -> None:
    """A name added to (or removed from) statusbridge.__all__ gets (or loses) its entry."""
    page = (DOCS / "reference" / "statusbridge.md").read_text()
    documented = re.findall(r"^::: statusbridge\.(\w+)$", page, re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(statusbridge.__all__) - {"__version__"}


def test_scale_out_example_runs(redis_url: str, tmp_path: Path) -> None:
    """The "Scale out" page's script: a LocalCluster of 2 worker processes, status on Redis."""
    pytest.importorskip("distributed")
    assert "python examples/scale_out.py" in PAGES["docs/scale-out.md"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "scale_out.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "STATUSBRIDGE_DIR": redis_url},
    ).stdout  # fmt: skip
    assert out.count("completed frame") == 4
    assert os.listdir(tmp_path) == []  # nothing written beside the script's working directory
