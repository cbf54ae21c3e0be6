"""SqliteCache, the ``sqlite://`` backend of StatusCache: initial load, then the change log.

The load (every record and the log's position) is one read transaction, so
following the log from that position misses nothing. A watchdog observer on the
database's folder wakes the cache thread when the database or its ``-wal`` file
changes; the thread then asks ``PRAGMA data_version`` (which moves when another
connection committed) and, if it moved, reads the log entries past its position
and the current documents of the jobs they name, in one short read transaction
(short, so checkpoints proceed and the ``-wal`` file stays bounded). The same
check runs every ``_NET_INTERVAL`` seconds whatever the events say: the safety
net for lost events or a dead observer.

A log trimmed past the cache's position (it was stopped, or fell behind more
than the store's ``log_keep``), or a database replaced by another file, makes the
cache reload in full and say so in ``health()``; so does ``reconcile_interval``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from statusbridge.cache._cache import StatusCache
from statusbridge.cache._health import CacheHealth
from statusbridge.cache._snapshot import Snapshot
from statusbridge.cache._watcher import FILE_CHANGES, stop_observer
from statusbridge.cache._written import remember_written
from statusbridge.record import BatchJob
from statusbridge.record._ranges import POSITIVE
from statusbridge.store._location import SqliteLocation, parse_location
from statusbridge.store.sqlite import decode_row, load, open_database
from statusbridge.store.sqlite._load import collector_paused, newest_position

__all__ = ["SqliteCache"]

logger = logging.getLogger(__name__)

_NET_INTERVAL = 0.5  # seconds between data_version checks without any event
# A writer's last write() to the -wal (the event) comes just before it publishes the commit
# in the shared-memory index (no event): a wakeup that finds nothing new looks again after
# these pauses, so that commit is seen at once instead of at the next safety-net check.
_RECHECKS = (0.001, 0.004, 0.016)
_READ_COUNT = 5000  # log entries read per step
_WRITTEN_MAX = 10_000  # own writes remembered until the log names them (see _note_written)
# Only these reach the handler (inotify is not even asked for the others: a reader's
# open and close of the database, the folder's own modified events).
_WAKING_EVENTS = FILE_CHANGES
_WAKING = frozenset(cls.event_type for cls in _WAKING_EVENTS)


class _Wakeup(FileSystemEventHandler):
    """Wakes the cache thread on changes of the database's files; holds no cache."""

    def __init__(self, names: frozenset[str], wake: Any) -> None:
        self.names = names
        self.wake = wake
        self.events = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WAKING:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and os.path.basename(os.fsdecode(path)) in self.names:
                self.events += 1
                self.wake.set()
                return


class _Watch:
    """A watchdog observer on the database's folder (native, or polling where it cannot)."""

    def __init__(self, folder: str, handler: _Wakeup) -> None:
        self.note: str | None = None
        try:
            self.observer: Any = Observer()
            self.observer.schedule(handler, folder, event_filter=_WAKING_EVENTS)
            self.observer.start()
        except OSError as exc:
            self.note = f"native observer unavailable ({exc}); polling"
            self.observer = PollingObserver(timeout=1.0)
            self.observer.schedule(handler, folder, event_filter=_WAKING_EVENTS)
            self.observer.start()

    @property
    def kind(self) -> str:
        name = type(self.observer).__name__.replace("Observer", "").lower()
        return name or "native"

    def is_alive(self) -> bool:
        return bool(self.observer.is_alive())

    def close(self) -> None:
        stop_observer(self.observer)  # also closes what watchdog leaves open on a quick stop


class _Connection:
    """The cache's own read connection, a resource of its life."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __del__(self) -> None:
        # Dropped without close(): closed here, not left to the connection's own collection
        # (CPython 3.13 warns about an unclosed database there).
        self.conn.close()


class SqliteCache(StatusCache):
    """Follow the jobs of one SQLite database.

    Open it as ``StatusCache("sqlite:///status.db")``. The first load happens
    here: a file that is not a statusbridge database raises ``UnusableDatabase``
    naming it. A database this process may not write is followed read-only.
    """

    _absorbs_writes = True

    def __init__(
        self,
        directory: str | os.PathLike[str] | SqliteLocation = "batch_status",
        *,
        reconcile_interval: float = 30.0,
    ) -> None:
        POSITIVE.check("reconcile_interval", reconcile_interval)
        where = parse_location(directory)
        if not isinstance(where, SqliteLocation):
            raise TypeError(f"not a sqlite:// location: {directory!r}")
        self._init_core()
        self._written: dict[str, tuple[str, BatchJob]] = {}  # job id -> (text, record) written here
        self.where = where
        self.reconcile_interval = reconcile_interval
        self._position = 0
        self._data_version = -1
        self._identity: tuple[int, int] | None = None
        self._reloads_for_trim = 0
        self._note: str | None = None
        self._need_reload = False
        self._next_reconcile = time.monotonic() + reconcile_interval
        self._next_check = time.monotonic() + _NET_INTERVAL
        self._readonly = False
        self._rechecks: list[float] = []  # when to look again after an empty wakeup
        self._conn = self._connect()
        name = where.path.name
        self._handler = _Wakeup(
            frozenset({name, f"{name}-wal", f"{name}-journal"}), self._life.wake
        )
        try:
            # Watch first, then load: a write landing between the two is seen twice, never missed.
            self._life.hold("watch", _Watch(str(where.path.parent), self._handler))
            self._reload(count=False)
        except BaseException:
            self._life.release()
            raise
        self._start_thread(f"statusbridge-cache:{where.path.name}")

    def _connect(self) -> sqlite3.Connection:
        conn, self._readonly = open_database(self.where, create=True)
        self._life.hold("connection", _Connection(conn))
        try:
            st = os.stat(self.where.path)
            self._identity = (st.st_dev, st.st_ino)
        except OSError:
            self._identity = None
        return conn

    @property
    def directory(self) -> str:
        """The location, for people (the URL with its absolute path)."""
        return self.where.absolute_url()

    def __repr__(self) -> str:
        return f"<StatusCache {self.where.url!r} version={self._snapshot.version}>"

    def health(self) -> CacheHealth:
        watch = self._life.resources.get("watch")
        kind = watch.kind if isinstance(watch, _Watch) else "none"
        notes = [f"woken by {kind} events on the database's folder"]
        if isinstance(watch, _Watch) and watch.note:
            notes.append(watch.note)
        if self._readonly:
            notes.append("read-only")
        if self._note:
            notes.append(self._note)
        return CacheHealth(
            running=not self._closed and self._thread.is_alive(),
            backend="sqlite",
            version=self._snapshot.version,
            jobs=len(self._snapshot),
            events=self._events,
            rescans=self._rescans,
            last_event_at=self._last_event_at,
            invalid_files=self._invalid_view,
            directory=self.where.absolute_url(),
            directory_present=self.where.path.exists(),
            observer_restarts=self._reloads_for_trim,
            last_error=self._last_error,
            backend_note="; ".join(notes),
            clock_skew=self._skew_note,
        )

    @property
    def readonly(self) -> bool:
        return self._readonly

    # -- the cache thread -----------------------------------------------------------
    def _seconds_to_next_step(self) -> float:
        pause = super()._seconds_to_next_step()
        due = min(self._next_check, self._next_reconcile, *self._rechecks[:1])
        return max(pause, due - time.monotonic(), 0.0)

    def _rescan_here(self) -> Snapshot:
        self._reload()
        return self._snapshot

    def _release(self) -> None:
        self._life.release()

    def _conn_now(self) -> sqlite3.Connection:
        """The read connection, reopened after ``close()`` (a rescan of a closed cache)."""
        if "connection" not in self._life.resources:
            self._conn = self._connect()
        return self._conn

    def _advance(self, *, full: bool) -> None:
        # This process's own writes: the log's mention of them decodes nothing.
        remember_written(self._written, self._take_absorbed(), str, _WRITTEN_MAX)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _NET_INTERVAL
            self._check_identity()
            watch = self._life.resources.get("watch")
            if isinstance(watch, _Watch) and not watch.is_alive() and not self._closed:
                logger.warning("statusbridge: observer for %s died; restarting it", self.where)
                self._life.hold("watch", _Watch(str(self.where.path.parent), self._handler))
        if full or self._need_reload or now >= self._next_reconcile:
            self._reload()
            return
        version = self._conn_now().execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            if self._rechecks and now >= self._rechecks[0]:
                self._rechecks.pop(0)
            elif not self._rechecks:
                self._rechecks = [now + pause for pause in _RECHECKS]
            return
        self._rechecks = []
        self._data_version = version
        self._follow()

    def _decode(self, job_id: str, doc: str) -> BatchJob:
        """A row the log named: the record this process wrote if it is that text, else decoded."""
        mine = self._written.pop(job_id, None)
        if mine is not None and mine[0] == doc:
            return mine[1]
        return decode_row(job_id, doc)

    def _check_identity(self) -> None:
        """A database replaced by another file (or deleted and made again): reopen, reload."""
        try:
            st = os.stat(self.where.path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        if identity is not None and identity != self._identity:
            logger.info("statusbridge: %s is another file now; reloading", self.where.path)
            self._life.release("connection")
            self._conn = self._connect()
            self._note = f"database file replaced; reloaded in full at {_clock()} UTC"
            self._need_reload = True

    def _failed(self, exc: Exception) -> float:
        super()._failed(exc)
        self._need_reload = True
        return 0.2

    def _reload(self, *, count: bool = True) -> None:
        """Load every record; ``count=False``: the first load, made in ``__init__``."""
        # The first snapshot is built with the garbage collector paused too (load() pauses
        # it for its own part): no subscriber can run yet, and building it makes several
        # objects per record.
        with nullcontext() if count else collector_paused():
            conn = self._conn_now()
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            position, records = load(conn)
            if count:
                self._rescans += 1
            self._need_reload = False
            self._next_reconcile = time.monotonic() + self.reconcile_interval
            self._position = position
            self._apply_load(records)

    def _follow(self) -> None:
        conn = self._conn_now()
        while True:
            # One statement, so one snapshot of the database: the entries past our
            # position, each with its job's current document (None: deleted since).
            rows = conn.execute(
                "SELECT c.pos, c.id, j.doc FROM changes AS c LEFT JOIN jobs AS j ON j.id = c.id"
                " WHERE c.pos > ? ORDER BY c.pos LIMIT ?",
                (self._position, _READ_COUNT),
            ).fetchall()
            if rows and rows[0][0] != self._position + 1:
                self._trimmed(f"change log trimmed past position {self._position}")
                return
            if not rows:
                newest = newest_position(conn)
                if newest < self._position:
                    self._trimmed(f"change log went back from {self._position} to {newest}")
                return
            self._position = rows[-1][0]
            self._events += len(rows)
            self._last_event_at = datetime.now(UTC)
            self._apply_documents({job_id: doc for _pos, job_id, doc in rows}, self._decode)
            if len(rows) < _READ_COUNT:
                return

    def _trimmed(self, why: str) -> None:
        logger.info("statusbridge: %s of %s; reloading in full", why, self.where)
        self._reloads_for_trim += 1
        self._note = f"{why}; reloaded in full at {_clock()} UTC"
        self._reload()


def _clock() -> str:
    return f"{datetime.now(UTC):%H:%M:%S}"
