"""``JobTableModel``: a Qt table model over a ``StatusCache``, changed on the GUI thread only.

The hand-over, step by step:

1. ``StatusCache.subscribe`` calls ``_Inbox.put`` on the cache's thread. It only
   stores the newest snapshot and the changed ids under a plain lock, and — if
   the GUI thread has not been told yet — emits one queued signal carrying the
   inbox's key. Nothing else runs on the cache thread: no model or widget method.
2. The signal lands on ``_Relay``, a QObject that lives on the GUI thread for the
   life of the process (so a signal never targets a deleted object), which
   hands it to the model registered under that key, if it is still alive.
3. The model refreshes at most ``max_refresh_rate`` times a second: it takes the
   inbox's contents and turns them into ``dataChanged`` for each changed row,
   ``beginRemoveRows``/``beginInsertRows`` for rows that left or arrived. It
   never resets: views keep their selection and scroll position.
"""

from __future__ import annotations

import html
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Set
from datetime import datetime
from enum import IntEnum
from typing import Any

import shiboken6
from PySide6.QtCore import (
    QAbstractTableModel,
    QCoreApplication,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QThread,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.display import (
    STATUS_COLOURS,
    elapsed_seconds,
    eta_seconds,
    format_duration,
    job_share,
    percent,
    printable,
    short_id,
    state_label,
)
from statusbridge.qt._interrupt import quit_on_ctrl_c
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._model import utc_now

__all__ = ["Column", "JobTableModel"]

logger = logging.getLogger(__name__)

_Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()


def _plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` as typed: Qt renders a tooltip that looks like HTML as
    rich text (a fake heading, an image loaded from disk), so the text is escaped inside
    rich text of our own, and control characters and bidi overrides are shown as escapes."""
    escaped = "<br>".join(html.escape(printable(line)) for line in text.split("\n"))
    return f"<p style='white-space:pre-wrap'>{escaped}</p>"


class Column(IntEnum):
    """The model's columns, in order."""

    JOB = 0
    BATCH = 1
    STATE = 2
    PROGRESS = 3
    ELAPSED = 4
    ETA = 5
    MESSAGE = 6


HEADERS = ("Job", "Batch", "State", "Progress", "Elapsed", "ETA", "Message")
_LAST = len(Column) - 1


def _creation_order(job: BatchJob) -> tuple[float, str]:
    return (job.created_at.timestamp() if job.created_at else 0.0, job.id)


def on_gui_thread() -> bool:
    """True on the thread of the running ``QCoreApplication`` (False when there is none)."""
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() is app.thread()


class _Inbox:
    """What the cache thread leaves for the GUI thread: the newest snapshot and the changed ids.

    ``put`` is the only statusbridge.qt code that runs off the GUI thread; it
    touches no Qt object but the process-wide relay's signal.
    """

    def __init__(self, key: int, relay: _Relay) -> None:
        self._key = key
        self._relay = relay
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._changed: set[str] = set()
        self._signalled = False
        self._closed = False
        self.unsubscribe: Callable[[], None] | None = None

    def put(self, snapshot: Snapshot, changed: Set[str]) -> None:  # the cache thread
        with self._lock:
            if self._closed:
                return
            if self._snapshot is None or snapshot.version > self._snapshot.version:
                self._snapshot = snapshot
            self._changed.update(changed)
            if self._signalled:
                return  # the GUI thread was told already and has not taken it yet
            self._signalled = True
        self._relay.arrived.emit(self._key)  # queued: the slot runs on the GUI thread

    def take(self) -> tuple[Snapshot, set[str]] | None:  # the GUI thread
        with self._lock:
            self._signalled = False
            if self._snapshot is None:
                return None
            taken = (self._snapshot, self._changed)
            self._snapshot, self._changed = None, set()
            return taken

    def close(self) -> None:  # any thread; idempotent
        with self._lock:
            self._closed = True
            self._snapshot, self._changed = None, set()
            unsubscribe, self.unsubscribe = self.unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()


class _Relay(QObject):
    """One per process, on the GUI thread, never deleted: queued signals always find it."""

    arrived = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self._models: weakref.WeakValueDictionary[int, JobTableModel] = (
            weakref.WeakValueDictionary()
        )
        self.arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def register(self, key: int, model: JobTableModel) -> None:
        self._models[key] = model

    @Slot(int)
    def _deliver(self, key: int) -> None:
        model = self._models.get(key)
        if model is not None:
            model._wake()


_relay_instance: _Relay | None = None
_keys = itertools.count(1)


def _relay() -> _Relay:
    global _relay_instance  # noqa: PLW0603 - one relay per process, made on the GUI thread
    # QApplication.shutdown() deletes every QObject, ours included: a program (or a test
    # run) that makes a second application after it gets a new relay, not a dead one.
    if _relay_instance is None or not shiboken6.isValid(_relay_instance):
        _relay_instance = _Relay()
    return _relay_instance


class JobTableModel(QAbstractTableModel):
    """The jobs of a ``StatusCache`` snapshot (or of one batch) as a Qt table, kept current.

    Create it on the GUI thread, with a ``QApplication`` running. Rows keep the
    order in which jobs appeared (oldest first at start); a changed job emits
    ``dataChanged`` for its row only, new jobs are appended with
    ``beginInsertRows``, removed ones leave with ``beginRemoveRows``; the model
    is never reset. Refreshes are coalesced to at most ``max_refresh_rate`` per
    second. While jobs run, the Elapsed and ETA cells of running rows are
    refreshed every ``clock_interval`` seconds (0 turns that off).

    ``close()`` unsubscribes from the cache (the cache itself stays open: it is
    the caller's); a model collected without ``close()`` unsubscribes too.
    After ``close()`` the model keeps its last rows and no longer changes.

    Created on the main thread, it makes Ctrl-C end the event loop quietly
    (``quit_on_ctrl_c``), unless the program handles SIGINT itself.
    """

    JobRole = Qt.ItemDataRole.UserRole + 1  # the BatchJob of the row
    SortRole = Qt.ItemDataRole.UserRole + 2  # a value that sorts naturally (numbers, not text)
    ProgressRole = Qt.ItemDataRole.UserRole + 3  # progress 0..1, or None when unknown

    #: Emitted on the GUI thread after each refresh, with the snapshot now shown.
    refreshed = Signal(object)

    def __init__(
        self,
        cache: StatusCache,
        batch_id: str | None = None,
        parent: QObject | None = None,
        *,
        max_refresh_rate: float = 30.0,
        clock_interval: float = 1.0,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if not on_gui_thread():
            raise RuntimeError("create JobTableModel on the GUI thread, after the QApplication")
        quit_on_ctrl_c()  # Ctrl-C ends the program's event loop, not one of our slots
        if max_refresh_rate <= 0:
            raise ValueError(f"max_refresh_rate must be positive, got {max_refresh_rate}")
        super().__init__(parent)
        self._cache = cache
        self._batch_id = batch_id
        self._min_interval = 1.0 / max_refresh_rate
        self._now = now
        self._closed = False
        self._last_refresh = -math.inf

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # coarse timers may fire 5% early
        self._timer.timeout.connect(self._refresh)
        self._clock = QTimer(self)
        self._clock.timeout.connect(self.tick)
        if clock_interval > 0:
            self._clock.start(max(1, round(clock_interval * 1000)))

        key = next(_keys)
        relay = _relay()
        relay.register(key, self)
        self._inbox = _Inbox(key, relay)
        # Subscribe first, then read: a change landing in between is applied twice, never missed.
        self._inbox.unsubscribe = cache.subscribe(self._inbox.put)
        self._snapshot = cache.snapshot()
        first = self._snapshot.batch(batch_id) if batch_id is not None else self._snapshot.values()
        jobs = sorted((j for j in first if self._wanted(j)), key=_creation_order)
        self._ids: list[str] = [job.id for job in jobs]
        self._jobs: dict[str, BatchJob] = {job.id: job for job in jobs}
        self._rows: dict[str, int] = {job_id: row for row, job_id in enumerate(self._ids)}
        # Dropped without close(): stop listening (the inbox holds no reference to the model).
        self._finalizer = weakref.finalize(self, self._inbox.close)

    # -- what it shows ---------------------------------------------------------
    @property
    def batch_id(self) -> str | None:
        return self._batch_id

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot the rows show now (the cache may be ahead by one refresh)."""
        return self._snapshot

    @property
    def closed(self) -> bool:
        return self._closed

    def job_at(self, row: int) -> BatchJob:
        return self._jobs[self._ids[row]]

    def row_of(self, job_id: str) -> int | None:
        return self._rows.get(job_id)

    def job_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def _wanted(self, job: BatchJob) -> bool:
        return self._batch_id is None or job.batch_id == self._batch_id

    # -- QAbstractTableModel -----------------------------------------------------
    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(Column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is Qt.Orientation.Horizontal and 0 <= section < len(HEADERS):
            if role == Qt.ItemDataRole.DisplayRole:
                return HEADERS[section]
            if role == Qt.ItemDataRole.TextAlignmentRole:
                return _alignment(Column(section))
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._ids):
            return None
        job = self._jobs[self._ids[index.row()]]
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(job, column)
        if role == self.JobRole:
            return job
        if role == self.ProgressRole:
            return job_share(job)
        if role == self.SortRole:
            return self._sort_key(job, column)
        if role == Qt.ItemDataRole.ForegroundRole:
            return self._colour(job, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job, column)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _alignment(column)
        return None

    def _text(self, job: BatchJob, column: Column) -> str:
        if column is Column.JOB:  # one batch: without its prefix (the full id: tooltip)
            return short_id(job.id, batch_id=self._batch_id)
        if column is Column.BATCH:
            return job.batch_id or ""
        if column is Column.STATE:
            return state_label(job)
        if column is Column.PROGRESS:
            progress = job_share(job)
            return "" if progress is None else percent(progress)
        if column is Column.ELAPSED:
            return format_duration(elapsed_seconds(job, self._now()))
        if column is Column.ETA:
            eta = eta_seconds(job, self._now())
            return "" if eta is None else f"~{format_duration(eta)}"
        return _one_line(job.error_message or job.message)

    def _sort_key(self, job: BatchJob, column: Column) -> Any:
        if column is Column.PROGRESS:
            progress = job_share(job)
            return -1.0 if progress is None else progress
        if column is Column.JOB:
            return job.id
        if column is Column.ELAPSED:
            return elapsed_seconds(job, self._now()) or -1.0
        if column is Column.ETA:
            eta = eta_seconds(job, self._now())
            return math.inf if eta is None else eta
        if column is Column.STATE:
            return list(BatchStatus).index(job.status)
        return self._text(job, column)

    @staticmethod
    def _colour(job: BatchJob, column: Column) -> QColor | None:
        if column is Column.STATE or (column is Column.MESSAGE and job.error_message):
            return QColor(STATUS_COLOURS[job.status])
        return None

    @staticmethod
    def _tooltip(job: BatchJob, column: Column) -> str | None:
        text = None
        if column is Column.MESSAGE:
            text = (job.error_message or job.message) or None
        elif column is Column.STATE and job.owner:
            text = f"{job.status.value}, worker {job.owner}"
        elif column is Column.JOB:
            return job.id  # a validated id: letters, digits, '.', '_', '-' only
        return None if text is None else _plain_tooltip(text)

    # -- updates (GUI thread) --------------------------------------------------------
    @Slot()
    def _wake(self) -> None:
        """A change is waiting: refresh now, or when the rate limit allows."""
        if self._closed:
            return
        wait = self._last_refresh + self._min_interval - time.monotonic()
        if wait <= 0:
            self._refresh()
        elif not self._timer.isActive():
            self._timer.start(max(1, math.ceil(wait * 1000)))

    @Slot()
    def _refresh(self) -> None:
        if self._closed:
            return
        self._last_refresh = time.monotonic()
        taken = self._inbox.take()
        if taken is None:
            return
        snapshot, changed = taken
        if snapshot.version > self._snapshot.version:
            self._snapshot = snapshot
        self._apply(self._snapshot, changed)
        self.refreshed.emit(self._snapshot)

    def _apply(self, snapshot: Snapshot, changed: Iterable[str]) -> None:
        updated: list[int] = []
        removed: list[int] = []
        added: list[BatchJob] = []
        for job_id in sorted(changed):
            job = snapshot.get(job_id)
            if job is not None and not self._wanted(job):
                job = None
            old = self._jobs.get(job_id)
            if job is None:
                if old is not None:
                    removed.append(self._rows[job_id])
            elif old is None:
                added.append(job)
            elif job is not old:
                self._jobs[job_id] = job
                updated.append(self._rows[job_id])
        for row in sorted(updated):
            self.dataChanged.emit(self.index(row, 0), self.index(row, _LAST))
        if removed:
            self._remove_rows(removed)
        if added:
            added.sort(key=_creation_order)
            first = len(self._ids)
            self.beginInsertRows(_ROOT, first, first + len(added) - 1)
            for offset, job in enumerate(added):
                self._ids.append(job.id)
                self._jobs[job.id] = job
                self._rows[job.id] = first + offset
            self.endInsertRows()

    def _remove_rows(self, rows: list[int]) -> None:
        """Remove ``rows`` in contiguous runs, last run first, so earlier rows keep their place."""
        rows.sort(reverse=True)
        runs: list[tuple[int, int]] = []  # (first, last), descending
        for row in rows:
            if runs and runs[-1][0] == row + 1:
                runs[-1] = (row, runs[-1][1])
            else:
                runs.append((row, row))
        for first, last in runs:
            self.beginRemoveRows(_ROOT, first, last)
            for job_id in self._ids[first : last + 1]:
                del self._jobs[job_id]
                del self._rows[job_id]
            del self._ids[first : last + 1]
            self.endRemoveRows()
        for row in range(runs[-1][0], len(self._ids)):
            self._rows[self._ids[row]] = row

    @Slot()
    def tick(self) -> None:
        """Refresh the Elapsed and ETA cells of running rows: the clock moved, the records not."""
        if self._closed:
            return
        start: int | None = None
        for row, job_id in enumerate([*self._ids, None]):
            running = job_id is not None and self._jobs[job_id].status is BatchStatus.RUNNING
            if running and start is None:
                start = row
            elif not running and start is not None:
                self.dataChanged.emit(
                    self.index(start, Column.ELAPSED), self.index(row - 1, Column.ETA)
                )
                start = None

    def refresh_now(self) -> None:
        """Apply what is waiting at once, without the rate limit (GUI thread; tests, benchmarks)."""
        self._timer.stop()
        self._refresh()

    # -- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop following the cache (does not close it). The last rows stay. May be called twice."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self._clock.stop()
        self._inbox.close()

    def __repr__(self) -> str:
        scope = f" batch={self._batch_id!r}" if self._batch_id is not None else ""
        return f"<JobTableModel rows={len(self._ids)}{scope} version={self._snapshot.version}>"


def _alignment(column: Column) -> int:
    if column in (Column.PROGRESS, Column.STATE):
        return int(Qt.AlignmentFlag.AlignCenter)
    if column in (Column.ELAPSED, Column.ETA):
        return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)


def _one_line(text: str) -> str:
    line, _, rest = text.partition("\n")
    return f"{line} …" if rest.strip() else line
