"""The desktop monitor (statusbridge.qt and ``statusbridge gui``) pointed at a sqlite:// URL.

Skips without PySide6 / pytest-qt / Xvfb; where CI=true their absence fails the run instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.waiting import wait_until
from support.xvfb import need, qt_application

need(importlib.util.find_spec("PySide6"), "PySide6 is not installed (pip install -e '.[qt]')")
need(importlib.util.find_spec("pytestqt"), "pytest-qt is not installed (pip install -e '.[dev]')")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from statusbridge import BatchQueue, BatchStatus, StatusStore  # noqa: E402
from statusbridge.qt import Column, JobMonitor, JobTableModel  # noqa: E402

from support.gui_workers import loop_until_cancelled  # noqa: E402

pytestmark = pytest.mark.slow
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def qapp() -> Iterator[QApplication]:
    """Overrides pytest-qt's: a QApplication on the xcb platform of a private Xvfb server."""
    with qt_application() as app:
        assert isinstance(app, QApplication)
        yield app


def cell(model: JobTableModel, job_id: str, column: Column) -> Any:
    row = model.row_of(job_id)
    return None if row is None else model.index(row, column).data()


def test_monitor_window_on_sqlite_cancels_a_process_job(qtbot: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    with BatchQueue(2, status_dir=url, executor="process") as queue:
        job_id = queue.submit(loop_until_cancelled, {"limit": 60.0}, batch_id="demo")
        monitor = JobMonitor(url)
        qtbot.addWidget(monitor)
        with qtbot.waitExposed(monitor):
            monitor.show()
        qtbot.waitUntil(
            lambda: cell(monitor.model, job_id, Column.STATE) == "running", timeout=WAIT_MS
        )
        assert monitor.select_job(job_id)
        qtbot.waitUntil(monitor.cancel_button.isEnabled, timeout=WAIT_MS)
        qtbot.mouseClick(monitor.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: cell(monitor.model, job_id, Column.STATE) == "cancelled", timeout=WAIT_MS
        )
        # The queue's own cache follows the database on its own thread: it may see the
        # cancel a moment after the window's cache did.
        wait_until(
            lambda: getattr(queue.get_job_status(job_id), "status", None) is BatchStatus.CANCELLED,
            30,
            "the queue to see the cancel",
        )
        monitor.close()


def test_gui_command_on_a_sqlite_url(qapp: QApplication, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    with StatusStore(url) as store:
        store.update("shown", status="running", progress=0.5)
    done = subprocess.run(
        [sys.executable, "-m", "statusbridge", "gui", "--dir", url, "--exit-after", "1"],
        env={**os.environ, "QT_QPA_PLATFORM": "xcb"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 job · 1 running" in done.stdout
