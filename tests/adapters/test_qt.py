"""statusbridge.qt in real windows: a QApplication on a private Xvfb display, writers in other
processes and threads, and proof that statusbridge calls widgets and models on the GUI thread only.

Skips without PySide6 / pytest-qt / Xvfb; where CI=true their absence fails the run instead.
Set STATUSBRIDGE_SCREENSHOTS=DIR to keep the monitor's screenshot (docs/desktop.png comes from it).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import inspect
import itertools
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from support.waiting import wait_until
from support.xvfb import need, qt_application

need(importlib.util.find_spec("PySide6"), "PySide6 is not installed (pip install -e '.[qt]')")
need(importlib.util.find_spec("pytestqt"), "pytest-qt is not installed (pip install -e '.[dev]')")

from PySide6.QtCore import QModelIndex, QPoint, Qt, QThread  # noqa: E402
from PySide6.QtWidgets import QApplication, QTableView  # noqa: E402

from statusbridge import BatchQueue, BatchStatus, StatusCache, StatusStore  # noqa: E402
from statusbridge.display import STATUS_COLOURS  # noqa: E402
from statusbridge.qt import Column, JobMonitor, JobTableModel, ProgressDelegate  # noqa: E402
from statusbridge.qt._model import _Inbox  # noqa: E402
from statusbridge.qt._monitor import _BatchFilter  # noqa: E402
from statusbridge.record._model import utc_now  # noqa: E402
from statusbridge.store.folder._store import FolderStore  # noqa: E402

from support.gui_workers import delete_job, loop_until_cancelled, write_job  # noqa: E402

pytestmark = pytest.mark.slow  # real windows on a private Xvfb display
SPAWN = mp.get_context("spawn")
ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def qapp() -> Iterator[QApplication]:
    """Overrides pytest-qt's: a QApplication on the xcb platform of a private Xvfb server."""
    with qt_application() as app:
        assert isinstance(app, QApplication)
        yield app


@pytest.fixture
def cache(status_dir: Path) -> Iterator[StatusCache]:
    with StatusCache(status_dir) as c:
        yield c


def in_child(func: Callable[..., None], *args: object) -> None:
    """Run ``func(*args)`` in a fresh 'spawn' process: another program writing the folder."""
    proc = SPAWN.Process(target=func, args=args)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0, f"{func.__name__} child exited with {proc.exitcode}"


def cell(model: JobTableModel, job_id: str, column: Column) -> Any:
    row = model.row_of(job_id)
    return None if row is None else model.index(row, column).data()


class Spy:
    """Records a model's change signals (connected directly: runs where they are emitted)."""

    def __init__(self, model: JobTableModel) -> None:
        self.resets = 0
        self.changed: list[tuple[int, int]] = []
        self.inserted: list[tuple[int, int]] = []
        self.removed: list[tuple[int, int]] = []
        direct = Qt.ConnectionType.DirectConnection
        model.modelReset.connect(self._reset, direct)
        model.layoutChanged.connect(self._reset, direct)
        model.dataChanged.connect(self._changed, direct)
        model.rowsInserted.connect(lambda _p, a, b: self.inserted.append((a, b)), direct)
        model.rowsRemoved.connect(lambda _p, a, b: self.removed.append((a, b)), direct)

    def _reset(self, *_: object) -> None:
        self.resets += 1

    def _changed(self, top: QModelIndex, bottom: QModelIndex, *_: object) -> None:
        self.changed.append((top.row(), bottom.row()))


# -- the model -----------------------------------------------------------------------------------
def test_model_shows_what_another_process_writes(qtbot: Any, status_dir: Path, cache: Any) -> None:
    model = JobTableModel(cache)
    spy = Spy(model)
    in_child(write_job, str(status_dir), "remote-1", {"status": "running", "progress": 0.3})
    qtbot.waitUntil(lambda: cell(model, "remote-1", Column.PROGRESS) == "30%", timeout=WAIT_MS)
    assert cell(model, "remote-1", Column.STATE) == "running"
    in_child(write_job, str(status_dir), "remote-1", {"status": "completed", "progress": 1.0})
    qtbot.waitUntil(lambda: cell(model, "remote-1", Column.STATE) == "completed", timeout=WAIT_MS)
    assert model.rowCount() == 1
    assert spy.resets == 0
    model.close()


def test_rows_come_and_go_without_a_reset(qtbot: Any, store: FolderStore, cache: Any) -> None:
    model = JobTableModel(cache, clock_interval=0)  # no Elapsed/ETA ticks: only record changes
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    with qtbot.waitExposed(view):
        view.show()
    spy = Spy(model)
    for job_id in ("a", "b", "c"):
        store.update(job_id, status="pending")
    qtbot.waitUntil(lambda: model.job_ids() == ("a", "b", "c"), timeout=WAIT_MS)
    assert spy.inserted and all(first >= 0 for first, _ in spy.inserted)

    view.selectRow(2)  # "c": the selection must follow it when "a" goes
    spy.changed.clear()
    store.update("b", status="running", progress=0.5)
    qtbot.waitUntil(lambda: cell(model, "b", Column.STATE) == "running", timeout=WAIT_MS)
    assert spy.changed and set(spy.changed) == {(1, 1)}  # b's row, nothing else

    in_child(delete_job, str(store.directory), "a")
    qtbot.waitUntil(lambda: model.job_ids() == ("b", "c"), timeout=WAIT_MS)
    assert spy.removed == [(0, 0)]
    assert [i.row() for i in view.selectionModel().selectedRows()] == [1]  # still "c"

    spy.changed.clear()
    store.update("c", status="running", progress=0.1)
    qtbot.waitUntil(lambda: cell(model, "c", Column.PROGRESS) == "10%", timeout=WAIT_MS)
    assert set(spy.changed) == {(1, 1)}
    store.update("d", status="pending")
    qtbot.waitUntil(lambda: model.job_ids() == ("b", "c", "d"), timeout=WAIT_MS)
    assert spy.inserted[-1] == (2, 2)
    assert spy.resets == 0
    model.close()


def test_batch_model_follows_one_batch(qtbot: Any, store: FolderStore, cache: Any) -> None:
    store.update("x1", batch_id="x")
    store.update("y1", batch_id="y")
    model = JobTableModel(cache, batch_id="x")
    qtbot.waitUntil(lambda: model.job_ids() == ("x1",), timeout=WAIT_MS)
    store.update("x2", batch_id="x")
    store.update("y2", batch_id="y")
    qtbot.waitUntil(lambda: model.job_ids() == ("x1", "x2"), timeout=WAIT_MS)
    store.update("x1", batch_id="y")  # moved to another batch: leaves this view
    qtbot.waitUntil(lambda: model.job_ids() == ("x2",), timeout=WAIT_MS)
    model.close()


def test_refreshes_are_coalesced_to_30_per_second(
    qtbot: Any, store: FolderStore, cache: Any
) -> None:
    model = JobTableModel(cache, clock_interval=0)
    refreshes: list[float] = []
    # The rate limiter's own clock readings: when each refresh began. (A refresh's end may
    # move: this process' writer thread competes for the GIL.)
    model.refreshed.connect(lambda _snap: refreshes.append(model._last_refresh))
    writes = 300

    def writer() -> None:
        for i in range(writes):
            store.update("busy", status="running", progress=i / writes, meta={"i": i})

    thread = threading.Thread(target=writer)
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=60_000)
    thread.join()
    qtbot.waitUntil(
        lambda: (
            model.row_of("busy") is not None
            and model.job_at(model.row_of("busy") or 0).meta["i"] == writes - 1
        ),
        timeout=WAIT_MS,
    )
    gaps = [b - a for a, b in itertools.pairwise(refreshes)]
    assert len(refreshes) < writes / 2, "updates were not coalesced"
    assert min(gaps) >= 1 / 30 - 0.001, f"two refreshes {min(gaps) * 1e3:.1f} ms apart"
    model.close()


def test_close_and_collection_unsubscribe(qtbot: Any, store: FolderStore, cache: Any) -> None:
    before = len(cache._subscribers)
    model = JobTableModel(cache)
    assert len(cache._subscribers) == before + 1
    model.close()
    model.close()  # twice is fine
    assert len(cache._subscribers) == before
    store.update("after-close", status="running")
    cache.rescan()
    QApplication.processEvents()
    assert model.row_of("after-close") is None  # a closed model keeps its rows, unchanged

    dropped = JobTableModel(cache)
    assert len(cache._subscribers) == before + 1
    del dropped
    gc.collect()
    assert len(cache._subscribers) == before


def test_model_refuses_other_threads(qapp: QApplication, cache: Any) -> None:
    errors: list[BaseException] = []

    def make() -> None:
        try:
            JobTableModel(cache)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    assert errors and "GUI thread" in str(errors[0])


# -- the monitor window ------------------------------------------------------------------------
def test_cancel_from_the_window_stops_a_running_job(qtbot: Any, status_dir: Path) -> None:
    with BatchQueue(2, status_dir=str(status_dir)) as queue:
        job_id = queue.submit(loop_until_cancelled, {"limit": 60.0}, batch_id="demo")
        monitor = JobMonitor(status_dir)
        qtbot.addWidget(monitor)
        with qtbot.waitExposed(monitor):
            monitor.show()
        qtbot.waitUntil(
            lambda: cell(monitor.model, job_id, Column.STATE) == "running", timeout=WAIT_MS
        )
        assert monitor._store is None  # read-only until someone cancels
        assert monitor.select_job(job_id)
        qtbot.waitUntil(monitor.cancel_button.isEnabled, timeout=WAIT_MS)
        qtbot.mouseClick(monitor.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: cell(monitor.model, job_id, Column.STATE) == "cancelled", timeout=WAIT_MS
        )
        # The queue's own cache may see the cancel a moment after the window's cache did.
        wait_until(
            lambda: getattr(queue.get_job_status(job_id), "status", None) is BatchStatus.CANCELLED,
            30,
            "the queue to see the cancel",
        )
        assert "Cancel requested for 1 job" in monitor.status_label.text()
        assert not monitor.cancel_button.isEnabled()  # the selected job is finished now
        monitor.close()
    assert not monitor._cache.health().running  # the monitor closed the cache it opened


def test_batch_filter_and_summary(qtbot: Any, store: FolderStore, status_dir: Path) -> None:
    store.update("p1", batch_id="photos", status="completed")
    store.update("p2", batch_id="photos", status="running", progress=0.5)
    store.update("r1", batch_id="reports", status="failed", error_message="KeyError: 'x'")
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    monitor.show()
    boxes = [monitor.batch_box.itemText(i) for i in range(monitor.batch_box.count())]
    assert boxes == ["All batches", "photos", "reports"]
    assert monitor.proxy.rowCount() == 3
    monitor.batch_box.setCurrentIndex(1)
    assert monitor.proxy.rowCount() == 2
    assert monitor.summary_label.text().startswith("2 jobs · 1 running · 1 completed")
    store.update("p3", batch_id="photos")
    store.update("n1", batch_id="new")
    qtbot.waitUntil(lambda: monitor.proxy.rowCount() == 3, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: monitor.batch_box.findText("new") > 0, timeout=WAIT_MS)
    monitor.set_batch(None)
    assert monitor.proxy.rowCount() == 5

    def shown() -> list[str]:
        return [monitor.proxy.index(r, Column.JOB).data() for r in range(monitor.proxy.rowCount())]

    assert shown() == ["p1", "p2", "r1", "p3", "n1"]  # as they arrived
    header = monitor.table.horizontalHeader()
    x = header.sectionViewportPosition(Column.PROGRESS) + 10
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
    progress = [monitor.proxy.index(r, Column.PROGRESS).data(JobTableModel.ProgressRole) or 0.0
                for r in range(5)]  # fmt: skip
    assert progress in (sorted(progress), sorted(progress, reverse=True))
    assert progress != [1.0, 0.5, 0.0, 0.0, 0.0]  # (the arrival order) it did sort
    monitor.close()


def varied_jobs(store: FolderStore) -> list[str]:
    """A handful of jobs in every state, with plausible times (for the screenshot)."""
    now = utc_now()

    def ago(seconds: float) -> Any:
        return now - timedelta(seconds=seconds)

    photos, reports = {"batch_id": "photos"}, {"batch_id": "reports"}
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("resize-0001", {**photos, "status": "completed", "progress": 1.0,
                         "message": "done: 100 images", "started_at": ago(95),
                         "completed_at": ago(20)}),
        ("resize-0002", {**photos, "status": "running", "progress": 0.45,
                         "message": "resizing 45/100", "started_at": ago(40)}),
        ("resize-0003", {**photos, "status": "running", "progress": 0.8,
                         "message": "resizing 80/100", "started_at": ago(61),
                         "cancel_requested": True}),
        ("resize-0004", {**photos, "status": "pending", "message": "queued"}),
        ("report-7", {**reports, "status": "failed", "progress": 0.3,
                      "error_message": "KeyError: 'total'", "started_at": ago(31),
                      "completed_at": ago(25)}),
        ("report-8", {**reports, "status": "cancelled", "progress": 0.6,
                      "message": "cancelled by user", "started_at": ago(70),
                      "completed_at": ago(50)}),
        ("index-rebuild", {"status": "running", "message": "scanning shards",
                           "started_at": ago(12)}),
    ]  # fmt: skip
    for job_id, fields in jobs:
        store.update(job_id, **fields)
    return [job_id for job_id, _ in jobs]


def test_screenshot_of_the_monitor(
    qtbot: Any, store: FolderStore, status_dir: Path, tmp_path: Path
) -> None:
    ids = varied_jobs(store)
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    monitor.resize(1000, 330)
    with qtbot.waitExposed(monitor):
        monitor.show()
    qtbot.waitUntil(lambda: monitor.model.rowCount() == 7, timeout=WAIT_MS)
    monitor.select_job("resize-0002")
    image = monitor.grab().toImage()
    path = tmp_path / "desktop.png"
    assert image.save(str(path))
    keep = os.environ.get("STATUSBRIDGE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / "desktop.png")
    assert (image.width(), image.height()) == (1000, 330)

    # The progress bars are drawn in their state's colour, at the start of each bar.
    view = monitor.table
    for job_id in ids:
        job = monitor.model.job_at(monitor.model.row_of(job_id) or 0)
        if not job.progress or job.id == "resize-0002":  # (the selected row is highlighted)
            continue
        index = monitor.proxy.mapFromSource(
            monitor.model.index(monitor.model.row_of(job_id) or 0, Column.PROGRESS)
        )
        rect = view.visualRect(index)
        point = view.viewport().mapTo(monitor, rect.center())
        point.setX(view.viewport().mapTo(monitor, rect.topLeft()).x() + 14)
        assert image.pixelColor(point).name() == STATUS_COLOURS[job.status], job_id
    monitor.close()


# -- the GUI thread only ---------------------------------------------------------------------------
def _record_threads(monkeypatch: pytest.MonkeyPatch, classes: list[type]) -> list[tuple[str, bool]]:
    """Wrap every method statusbridge.qt defines on ``classes``; log (name, on the GUI thread?)."""
    calls: list[tuple[str, bool]] = []
    app = QApplication.instance()
    assert app is not None
    main = app.thread()
    for cls in classes:
        for name, attr in list(vars(cls).items()):
            if not inspect.isfunction(attr):
                continue  # properties, static methods, signals, constants

            def wrapper(
                *args: Any, _f: Any = attr, _n: str = f"{cls.__name__}.{name}", **kw: Any
            ) -> Any:
                calls.append((_n, QThread.currentThread() is main))
                return _f(*args, **kw)

            monkeypatch.setattr(cls, name, functools.wraps(attr)(wrapper))
    return calls


def test_statusbridge_touches_qt_on_the_gui_thread_only(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch, store: FolderStore, status_dir: Path
) -> None:
    calls = _record_threads(
        monkeypatch, [JobTableModel, JobMonitor, _BatchFilter, ProgressDelegate]
    )
    hand_overs: list[bool] = []
    put = _Inbox.put

    def recording_put(self: _Inbox, *args: Any) -> None:
        hand_overs.append(threading.current_thread() is threading.main_thread())
        put(self, *args)

    monkeypatch.setattr(_Inbox, "put", recording_put)
    app = QApplication.instance()
    assert app is not None
    emitted: list[tuple[str, bool]] = []

    varied_jobs(store)
    with BatchQueue(2, status_dir=str(status_dir)) as queue:
        monitor = JobMonitor(status_dir)
        qtbot.addWidget(monitor)
        for signal in ("dataChanged", "rowsInserted", "rowsRemoved", "modelReset", "refreshed"):
            getattr(monitor.model, signal).connect(
                lambda *_, s=signal: emitted.append((s, QThread.currentThread() is app.thread())),
                Qt.ConnectionType.DirectConnection,
            )
        with qtbot.waitExposed(monitor):
            monitor.show()
        try:
            # Writers everywhere: a job thread of a queue, a plain thread, another process.
            job_id = queue.submit(loop_until_cancelled, {"limit": 60.0}, batch_id="photos")
            writer = threading.Thread(
                target=lambda: [
                    store.update(f"t-{i}", status="running", progress=0.5) for i in range(20)
                ]
            )
            writer.start()
            in_child(write_job, str(status_dir), "remote", {"status": "running", "progress": 0.7})
            in_child(delete_job, str(status_dir), "report-8")
            writer.join()
            qtbot.waitUntil(
                lambda: cell(monitor.model, "remote", Column.PROGRESS) == "70%", timeout=WAIT_MS
            )
            qtbot.waitUntil(lambda: monitor.model.row_of("report-8") is None, timeout=WAIT_MS)
            qtbot.waitUntil(
                lambda: cell(monitor.model, "t-19", Column.STATE) == "running", timeout=WAIT_MS
            )
            qtbot.waitUntil(
                lambda: cell(monitor.model, job_id, Column.STATE) == "running", timeout=WAIT_MS
            )
            monitor.model.tick()
            header = monitor.table.horizontalHeader()
            x = header.sectionViewportPosition(Column.PROGRESS) + 10
            qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
            monitor.batch_box.setCurrentIndex(monitor.batch_box.findText("photos"))
            monitor.select_job(job_id)
            qtbot.mouseClick(monitor.cancel_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(
                lambda: cell(monitor.model, job_id, Column.STATE) == "cancelled", timeout=WAIT_MS
            )
            monitor.grab()  # paint everything once more
        finally:  # a thread violation explains a timeout above: report it first
            off = sorted({name for name, on_gui in calls if not on_gui})
            assert not off, f"called off the GUI thread: {off}"
            monitor.close()

    names = {name for name, _ in calls}
    for expected in (
        "JobTableModel._apply",
        "JobTableModel.data",
        "JobMonitor.cancel_selected",
        "ProgressDelegate.paint",
        "_BatchFilter.filterAcceptsRow",
        "JobMonitor.release",
    ):
        assert expected in names, f"{expected} was never called: the test did not exercise it"
    assert all(on_gui for _, on_gui in calls), "closing called something off the GUI thread"
    assert emitted and all(on_gui for _, on_gui in emitted), (
        "a model signal fired off the GUI thread"
    )
    # ...while the changes themselves arrived on the cache's thread, and were handed over.
    assert hand_overs and not any(hand_overs)


# -- statusbridge gui ------------------------------------------------------------------------------
def run_gui(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statusbridge", "gui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    return env


def test_gui_opens_the_window_and_exits(
    qapp: QApplication, store: FolderStore, status_dir: Path
) -> None:
    store.update("shown", status="running", progress=0.5)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}  # DISPLAY: the fixture's Xvfb
    done = run_gui(["--dir", str(status_dir), "--exit-after", "1"], env)
    assert done.returncode == 0, done.stderr
    assert "1 job · 1 running" in done.stdout  # what the window showed, printed as it closes


def test_gui_without_a_display_is_a_one_line_error(status_dir: Path) -> None:
    done = run_gui(["--dir", str(status_dir)], headless_env())
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "display" in lines[0], done.stderr


def test_gui_without_pyside6_is_a_one_line_error(status_dir: Path) -> None:
    code = (
        "import sys; sys.modules['PySide6'] = None; "  # as if it were not installed
        "from statusbridge.cli import main; "
        f"sys.exit(main(['gui', '--dir', {str(status_dir)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PySide6" in lines[0] and "statusbridge[qt]" in lines[0]


def test_gui_missing_folder(tmp_path: Path) -> None:
    done = run_gui(["--dir", str(tmp_path / "nope")], headless_env())
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_gui_names_what_keeps_qt_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before Qt starts: Qt itself would abort the process without a word we control."""
    from statusbridge.cli._gui import _display_problem

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":4242")  # no server there
    no_plugin = tmp_path / "pyside"
    assert "cannot connect to the X display ':4242'" in (_display_problem(no_plugin) or "")
    broken = no_plugin / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a shared library")  # as when a system library it needs is missing
    problem = _display_problem(no_plugin) or ""
    assert problem.startswith("Qt's X11 (xcb) plugin cannot load") and "apt-get install" in problem
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no display needed: Qt's business
    assert _display_problem(no_plugin) is None


# Runs the example with Qt's loop ending once both of its views show the job.
RUN_BRIEFLY = """
import runpy, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QTableView
run = QApplication.exec
def exec_until_shown(self=None):
    deadline = time.monotonic() + 30
    def check():
        tops = QApplication.topLevelWidgets()
        views = [w.model() for w in tops if isinstance(w, QTableView)]
        monitors = [w.model for w in tops if type(w).__name__ == "JobMonitor"]
        rows = [model.rowCount() for model in views + monitors]
        if (len(rows) == 2 and all(rows)) or time.monotonic() > deadline:
            print("rows", rows)
            QApplication.quit()
    timer = QTimer()
    timer.timeout.connect(check)
    timer.start(20)
    return run()
QApplication.exec = exec_until_shown
sys.argv = ["qt_monitor.py", sys.argv[1]]
runpy.run_path(%r, run_name="__main__")
"""


def test_readme_desktop_example_runs(
    qapp: QApplication, store: FolderStore, status_dir: Path
) -> None:
    example = ROOT / "examples" / "qt_monitor.py"  # docs/desktop.md shows it: tests/test_readme.py
    store.update("from-readme", status="running", progress=0.5)
    done = subprocess.run(
        [sys.executable, "-c", RUN_BRIEFLY % str(example), str(status_dir)],
        env={**os.environ, "QT_QPA_PLATFORM": "xcb"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rows [1, 1]" in done.stdout, done.stdout + done.stderr


def test_del_key_cancels_the_selected_pending_job(
    qtbot: Any, store: FolderStore, status_dir: Path
) -> None:
    store.update("waiting", status="pending")
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    with qtbot.waitExposed(monitor):
        monitor.show()
    monitor.activateWindow()
    qtbot.waitUntil(monitor.isActiveWindow, timeout=WAIT_MS)  # shortcuts need the window active
    assert monitor.select_job("waiting")
    monitor.table.setFocus()
    qtbot.keyClick(monitor.table, Qt.Key.Key_Delete)
    qtbot.waitUntil(
        lambda: cell(monitor.model, "waiting", Column.STATE) == "cancelled", timeout=WAIT_MS
    )
    monitor.close()


# -- Ctrl-C (issue 22, item 5) ------------------------------------------------------------------
# Runs the example as it is, printing "shown" once both of its views show the job.
RUN_UNTIL_CTRL_C = """
import runpy, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QTableView
run = QApplication.exec
def exec_and_say_when_shown(self=None):
    def check():
        tops = QApplication.topLevelWidgets()
        views = [w.model() for w in tops if isinstance(w, QTableView)]
        monitors = [w.model for w in tops if type(w).__name__ == "JobMonitor"]
        rows = [model.rowCount() for model in views + monitors]
        if len(rows) == 2 and all(rows):
            timer.stop()
            print("shown", flush=True)
    timer = QTimer()
    timer.timeout.connect(check)
    timer.start(20)
    code = run()
    print("exec returned", code, flush=True)
    return code
QApplication.exec = exec_and_say_when_shown
sys.argv = ["qt_monitor.py", sys.argv[1]]
runpy.run_path(%r, run_name="__main__")
"""


def test_ctrl_c_ends_the_qt_example_quietly(
    qapp: QApplication, store: StatusStore, status_dir: Path
) -> None:
    """The README's desktop example in a real process: one SIGINT ends it at once, no traceback.

    Before the fix each Ctrl-C printed KeyboardInterrupt from ``_Relay._deliver`` or ``tick``
    and the windows stayed open.
    """
    import signal
    import time

    from support.processes import child_env, popen

    store.update("busy", status="running", progress=0.5)
    example = ROOT / "examples" / "qt_monitor.py"
    proc = popen(
        [sys.executable, "-c", RUN_UNTIL_CTRL_C % str(example), str(status_dir)],
        env=child_env(QT_QPA_PLATFORM="xcb"),  # DISPLAY: the fixture's Xvfb
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "shown"
        for _ in range(3):  # the writer keeps the slots busy, as in the issue
            store.update("busy", progress=0.6)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "exec returned 130" in out, out + err
    assert proc.returncode == 0, err  # the example ends normally after app.exec()
    assert took < 3, took


def test_ctrl_c_outside_the_event_loop_is_still_keyboard_interrupt(
    qapp: QApplication, cache: Any
) -> None:
    import signal

    from statusbridge.qt import quit_on_ctrl_c

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        model = JobTableModel(cache)  # installs the handler: SIGINT was Python's default
        try:
            handler = signal.getsignal(signal.SIGINT)
            assert handler is not signal.default_int_handler
            assert quit_on_ctrl_c() is None  # installed once
            with pytest.raises(KeyboardInterrupt):  # no loop runs: nothing else to end
                signal.raise_signal(signal.SIGINT)
        finally:
            model.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a program that ignores Ctrl-C
        assert quit_on_ctrl_c() is None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_qt_says_100_only_for_completed_work(
    qtbot: Any, store: StatusStore, status_dir: Path
) -> None:
    """Issue 22, item 7: a job cancelled after its last step, and a batch where nothing
    completed, are never drawn full nor said "100%" (the window said "100% done")."""
    store.update("late", batch_id="b", status="cancelled", progress=1.0, message="step 20/20")
    for i in range(4):
        store.update(f"c{i}", batch_id="b", status="cancelled", progress=0.3)
    store.update("f", batch_id="b", status="failed", progress=0.5, error_message="E: x")
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    monitor.show()
    qtbot.waitUntil(lambda: monitor.model.rowCount() == 6, timeout=WAIT_MS)
    assert cell(monitor.model, "late", Column.PROGRESS) == "99%"
    share = monitor.model.index(monitor.model.row_of("late") or 0, Column.PROGRESS).data(
        JobTableModel.ProgressRole
    )
    assert share < 1.0
    assert monitor.overall_label.text() == "0%" and monitor.overall.value() == 0
    assert "6 of 6 done" in monitor.overall_label.toolTip()
    store.update("ok", batch_id="b2", status="completed")  # a job that reported nothing
    qtbot.waitUntil(lambda: monitor.model.row_of("ok") is not None, timeout=WAIT_MS)
    assert cell(monitor.model, "ok", Column.PROGRESS) == "100%"
    monitor.set_batch("b2")
    assert monitor.overall_label.text() == "100%" and monitor.overall.value() == 1000
    monitor.close()


def test_one_batch_in_the_window_drops_the_batch_column_and_prefix(
    qtbot: Any, store: StatusStore, status_dir: Path, cache: Any
) -> None:
    """Issue 22, item 6: six rows of 'batch-20261207-050743-...' plus a Batch column repeating
    it; now the rows say '…-0000' and the column is hidden while a batch is chosen."""
    batch = "batch-20261207-050743-b2f7a1ea1805b404"
    for i in range(3):
        store.update(f"{batch}-{i:04d}", batch_id=batch, status="running", progress=0.2)
    store.update("other-1", batch_id="other", status="pending")
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    monitor.show()
    qtbot.waitUntil(lambda: monitor.model.rowCount() == 4, timeout=WAIT_MS)
    assert not monitor.table.isColumnHidden(Column.BATCH)
    monitor.set_batch(batch)
    assert monitor.table.isColumnHidden(Column.BATCH)
    shown = [monitor.proxy.index(r, Column.JOB).data() for r in range(monitor.proxy.rowCount())]
    assert shown == ["…-0000", "…-0001", "…-0002"]
    tip = monitor.proxy.index(0, Column.JOB).data(Qt.ItemDataRole.ToolTipRole)
    assert tip == f"{batch}-0000"  # the whole id, a hover away
    monitor.set_batch(None)
    assert not monitor.table.isColumnHidden(Column.BATCH)
    assert monitor.proxy.index(0, Column.JOB).data() == f"{batch}-0000"
    monitor.close()
    model = JobTableModel(cache, batch_id=batch)  # the model of one batch, in your own view
    try:
        assert cell(model, f"{batch}-0001", Column.JOB) == "…-0001"
    finally:
        model.close()


def test_the_header_counts_are_never_cut_nor_under_the_bar(
    qtbot: Any, store: StatusStore, status_dir: Path, tmp_path: Path
) -> None:
    """Issue 22, item 12: squeezed beside the progress bar, '10 failed · :' ran under it and
    '13 cancellec' was cut. The counts now have a line of their own."""
    counts = {"completed": 5, "failed": 10, "cancelled": 13, "running": 3, "pending": 4}
    n = 0
    for status, count in counts.items():
        for _ in range(count):
            store.update(f"batch-20261207-050743-b2f7a1ea1805b404-{n:04d}", status=status,
                         batch_id="batch-20261207-050743-b2f7a1ea1805b404")  # fmt: skip
            n += 1
    monitor = JobMonitor(status_dir)
    qtbot.addWidget(monitor)
    monitor.resize(760, 320)
    with qtbot.waitExposed(monitor):
        monitor.show()
    qtbot.waitUntil(lambda: monitor.model.rowCount() == 35, timeout=WAIT_MS)
    monitor.set_batch("batch-20261207-050743-b2f7a1ea1805b404")
    qtbot.waitUntil(lambda: "13 cancelled" in monitor.summary_label.text(), timeout=WAIT_MS)
    label = monitor.summary_label
    assert not label.geometry().intersects(monitor.overall.geometry())
    assert not label.geometry().intersects(monitor.cancel_button.geometry())
    assert label.width() >= label.fontMetrics().horizontalAdvance(label.text())
    path = tmp_path / "gui-header.png"
    assert monitor.grab().save(str(path))
    print(f"screenshot: {path}")
    monitor.close()


def test_tooltips_and_labels_show_job_text_as_typed(
    qtbot: Any, store: FolderStore, cache: Any
) -> None:
    """Issue 26, item 8: a tooltip that looked like HTML was rendered (a fake green heading,
    an image loaded from disk); now it is escaped, and the labels are plain text."""
    hostile = "<h1 style='color:green'>ALL JOBS OK</h1><img src='/etc/x.png'>\u202eevil\nline 2"
    store.update("evil", batch_id="b", status="failed", error_message=hostile)
    model = JobTableModel(cache)
    qtbot.waitUntil(lambda: model.row_of("evil") is not None, timeout=WAIT_MS)
    row = model.row_of("evil")
    assert row is not None
    tip = model.index(row, Column.MESSAGE).data(Qt.ItemDataRole.ToolTipRole)
    assert "<h1" not in tip and "<img" not in tip and "\u202e" not in tip
    assert "&lt;h1 style=&#x27;color:green&#x27;&gt;ALL JOBS OK" in tip
    assert "\\u202eevil<br>line 2" in tip
    model.close()
    monitor = JobMonitor(store.directory, cache=cache)
    qtbot.addWidget(monitor)
    for label in (monitor.summary_label, monitor.overall_label, monitor.status_label):
        assert label.textFormat() is Qt.TextFormat.PlainText
    monitor.close()
