"""examples/tk_monitor.py in a real Tk window on a private Xvfb, while another process writes.

Skips without tkinter or Xvfb; where CI=true their absence fails the run instead.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.xvfb import need, xvfb

need(importlib.util.find_spec("tkinter"), "tkinter is not available (apt-get install python3-tk)")

from support.gui_workers import write_job  # noqa: E402
from support.waiting import wait_until  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tk_monitor.py"
SPAWN = mp.get_context("spawn")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as number:
        yield number


def write_in_child(folder: Path, job_id: str, fields: dict[str, object]) -> None:
    proc = SPAWN.Process(target=write_job, args=(str(folder), job_id, fields))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0


def test_tk_monitor_shows_jobs_another_process_writes(display: str, status_dir: Path) -> None:
    write_in_child(status_dir, "before-start", {"status": "completed", "progress": 1.0})
    env = {**os.environ, "DISPLAY": display}
    command = [sys.executable, str(EXAMPLE), "--dir", str(status_dir), "--exit-after", "6"]
    lines: list[str] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            wait_until(lambda: "ready\n" in lines or proc.poll() is not None, 30, "the window")
            assert "shown before-start completed\n" in lines
            write_in_child(status_dir, "tk-job", {"status": "running", "progress": 0.4})
            wait_until(lambda: "shown tk-job running\n" in lines, 10, "the running job")
            write_in_child(status_dir, "tk-job", {"status": "failed", "error_message": "boom"})
            wait_until(lambda: "shown tk-job failed\n" in lines, 10, "the failed job")
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(10)
        errors = proc.stderr.read() if proc.stderr else ""
    assert code == 0, errors
    assert errors == ""
