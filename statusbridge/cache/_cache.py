"""StatusCache: the read side. Keeps an immutable Snapshot current from a backend's changes.

``StatusCache(location)`` opens the backend the location names (the registry,
``store._location.backend_for``): a folder gives a ``FolderCache`` (file-system
events, ``cache/folder/``), a ``sqlite://`` URL a ``SqliteCache`` (initial load +
change log, ``cache/sqlite/``), a ``redis://`` URL a ``RedisCache`` (initial load +
change stream, ``cache/redis/``). This module imports none of them.

What every backend shares lives here: the snapshot swap, ``wait_for_change``,
``subscribe``, the health counters, write-through (``absorb``), and the cache
thread's life (``rescan()``, ``close()``; the thread itself is ``_life.py``). A
backend supplies only its ``_advance`` (one step: find out what changed,
``_publish`` it), ``_rescan_here`` (a full reload), ``_release`` (its observer,
connections) and ``health()``.

Ownership: neither the cache thread nor a backend's own threads hold a strong
reference to the cache (the thread holds a weak one between steps). A cache
dropped without ``close()`` is collected, and its finalizer makes the cache
thread release what the backend left in ``_Life.resources`` and end.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from datetime import datetime
from types import MappingProxyType
from typing import TypeVar, cast

from statusbridge.cache._health import MAX_SKEWED, CacheHealth, skew_note
from statusbridge.cache._life import _Life, _run
from statusbridge.cache._snapshot import Snapshot
from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob
from statusbridge.record._eta import CLOCK_SKEW_LIMIT
from statusbridge.record._model import utc_now
from statusbridge.store._files import RECORD_SUFFIX
from statusbridge.store._location import Location, backend_for, check_options
from statusbridge.store._store import StatusStore

__all__ = ["CacheHealth", "StatusCache", "Subscriber"]

logger = logging.getLogger(__name__)

Subscriber = Callable[[Snapshot, frozenset[str]], None]

_Key = str  # job id
_Action = BatchJob | None  # new record, or None for "gone"
_Doc = TypeVar("_Doc")  # a backend's stored form of one record (bytes, text)


class StatusCache:
    """An immutable in-memory ``Snapshot`` of every job at a location, kept current.

    Starts on construction (initial load, then following changes); use as a
    context manager or call ``close()``. Reading (``snapshot``, ``get``) does no
    I/O and takes no lock, whatever the backend.
    """

    _snapshot: Snapshot
    _thread: threading.Thread
    _life: _Life
    reconcile_interval: float
    # Whether ``absorb`` is used (the backend's ``_advance`` takes what it was handed).
    _absorbs_writes = False

    def __new__(
        cls,
        directory: str | os.PathLike[str] | Location = "batch_status",
        *,
        reconcile_interval: float = 30.0,
        polling: bool | None = None,
        poll_interval: float | None = None,
        max_bytes: int | None = None,
    ) -> StatusCache:
        """Open the backend ``directory`` names; see ``__init__`` for the options."""
        backend, _where = backend_for(directory)
        opened: type[StatusCache] = backend.load("cache") if cls is StatusCache else cls
        given = {"polling": polling, "poll_interval": poll_interval, "max_bytes": max_bytes}
        check_options(backend.name, opened, given)
        return super().__new__(opened)

    def __init__(
        self,
        directory: str | os.PathLike[str] | Location = "batch_status",
        *,
        reconcile_interval: float = 30.0,
        polling: bool | None = None,
        poll_interval: float | None = None,
        max_bytes: int | None = None,
    ) -> None:  # pragma: no cover - replaced by every backend
        """Every option of every backend; a backend refuses (TypeError) those it does not take.

        ``reconcile_interval`` is the period of the safety-net check on every backend.
        Folder only: ``polling`` (stat the folder instead of native events),
        ``poll_interval``, ``max_bytes`` (larger files are refused). None means the
        backend's default.
        """
        raise TypeError("StatusCache is opened through a backend")

    def _init_core(self) -> None:
        """State every backend shares; called first by each backend's ``__init__``."""
        self._snapshot = Snapshot()
        self._changed = threading.Condition(threading.Lock())
        self._subscribers: tuple[Subscriber, ...] = ()
        self._subscribers_lock = threading.Lock()
        self._events = 0
        self._rescans = 0
        self._last_event_at: datetime | None = None
        self._last_error: str | None = None
        self._in_subscribers = False  # the cache thread is calling subscribers now
        self._life = _Life()
        self._pause = 0.0  # seconds the thread waits after a failed step
        self._skews: dict[str, float] = {}  # writer -> seconds its clock is ahead (+) of ours
        self._skew_note: str | None = None
        self._invalid: dict[str, str] = {}  # record name -> why it is not a valid record
        self._invalid_view: Mapping[str, str] = MappingProxyType({})
        self._absorbed: deque[tuple[BatchJob, object]] = deque()  # see absorb()

    def _start_thread(self, name: str) -> None:
        """Start the cache thread; called last by each backend's ``__init__``."""
        self._thread = threading.Thread(
            target=_run, args=(weakref.ref(self), self._life), name=name, daemon=True
        )
        self._thread.start()
        # Dropped without close(): the cache thread releases the resources and ends.
        self._finalizer = weakref.finalize(self, self._life.end)
        self._finalizer.atexit = False

    # -- what each backend supplies ---------------------------------------------------
    def health(self) -> CacheHealth:
        raise NotImplementedError

    def _advance(self, *, full: bool) -> None:
        """One step of the cache thread: apply what changed (everything, with ``full``)."""
        raise NotImplementedError

    def _rescan_here(self) -> Snapshot:
        """Load everything again on the calling thread; the resulting snapshot."""
        raise NotImplementedError

    def _seconds_to_next_step(self) -> float:
        """How long the thread may wait (woken earlier by ``_life.wake``) before a step."""
        pause, self._pause = self._pause, 0.0
        return pause

    def _failed(self, exc: Exception) -> float:
        """A step raised ``exc``: note it, ask for a full reload; seconds to pause."""
        self._last_error = f"{type(exc).__name__}: {exc}"
        logger.exception("statusbridge cache thread error (reloading)")
        return 0.05

    def _release(self) -> None:
        """Let go of the backend's observer and connections (``close()``)."""
        self._life.release()

    def versions_of(self, jobs: Iterable[BatchJob]) -> dict[str, bytes]:
        """Opaque versions of those of ``jobs`` this cache holds as they are now.

        For ``StatusStore.delete_if_unchanged(versions=...)`` on the same location:
        a folder store checks a file's signature instead of reading it back. Jobs
        missing from the answer are checked the long way; a backend without such
        versions answers ``{}``.
        """
        return {}

    # -- the cache thread's life, shared -----------------------------------------------
    @property
    def _closed(self) -> bool:
        return self._life.closed

    def _step(self) -> None:
        """One round of the cache thread; it survives anything a backend raises."""
        rescans = self._life.take_rescans()
        try:
            self._advance(full=bool(rescans))
        except Exception as exc:  # noqa: BLE001 (the thread survives anything; _failed reports it)
            for waiting in rescans:
                waiting.set_exception(exc)
            self._pause = self._failed(exc)
        else:
            for waiting in rescans:
                waiting.set_result(self._snapshot)

    def rescan(self) -> Snapshot:
        """Load everything again now and return the resulting snapshot.

        The work runs on the cache thread, like every other change, so subscribers
        are always called there; the caller waits for it. Called from the cache
        thread itself (a subscriber) or on a closed cache, it runs in place.
        """
        if threading.current_thread() is self._thread:
            return self._rescan_here()
        if self._closed:
            return self._rescan_closed()
        done: Future[Snapshot] = Future()
        with self._life.lock:
            self._life.rescans_waiting.append(done)
        self._life.wake.set()
        if self._closed or not self._thread.is_alive():
            # Closed meanwhile (or the thread is gone): nobody else will answer.
            for waiting in self._life.take_rescans():
                waiting.set_result(self._rescan_closed())
        return done.result()

    def _rescan_closed(self) -> Snapshot:
        """A rescan of a closed cache: in place, then release what it opened."""
        try:
            return self._rescan_here()
        finally:
            self._release()

    def close(self) -> None:
        """Stop following changes. The last snapshot stays readable.

        May be called twice. A cache dropped without ``close()`` is stopped when
        it is collected.
        """
        if self._closed:
            return
        self._life.closed = True
        self._life.wake.set()
        self._join_thread()
        # Not under a backend's lock (the thread may hold it, calling subscribers): a
        # resource the thread opens meanwhile is released by the thread as it ends.
        self._release()
        for waiting in self._life.take_rescans():
            waiting.set_result(self._snapshot)
        with self._changed:
            self._changed.notify_all()

    # -- the UI read path: attribute reads only ------------------------------
    def snapshot(self) -> Snapshot:
        """The current snapshot. No I/O, no lock: call it on every render."""
        return self._snapshot

    def get(self, job_id: str) -> BatchJob | None:
        """The cached record of ``job_id`` (None if unknown). No I/O, no lock."""
        return self._snapshot.get(job_id)

    @property
    def version(self) -> int:
        return self._snapshot.version

    # -- write-through: this process's own writes ----------------------------
    def absorb(self, job: BatchJob, version: object) -> None:
        """A record this process just wrote to this cache's location (``StatusStore.on_written``).

        The cache thread takes it on its next step: a folder cache shows it after one
        lstat confirms the file is still the one written, and skips reading the file
        when its event comes; a SQLite cache skips decoding the row its change log
        names when the stored text is the one written. Anything else still arrives
        through the feed, so a record handed over here is never the only source of
        truth. Safe from any thread; quick (an append and a wake-up).
        """
        if self._absorbs_writes and not self._life.closed:
            self._absorbed.append((job, version))
            if not self._life.wake.is_set():  # (set() takes a lock; many writes, one wake)
                self._life.wake.set()

    def write_through(self, store: StatusStore) -> Callable[[], None]:
        """Hand ``store``'s writes (same location) to this cache as they happen; the undo."""
        return store.on_written(self.absorb)

    def _take_absorbed(self) -> list[tuple[BatchJob, object]]:
        """What ``absorb`` was handed since the last call, oldest first (the cache thread)."""
        taken: list[tuple[BatchJob, object]] = []
        pop = self._absorbed.popleft
        while self._absorbed:
            taken.append(pop())
        return taken

    # -- waiting and subscribing ----------------------------------------------
    def wait_for_change(self, since_version: int, timeout: float | None = None) -> Snapshot:
        """Block until the snapshot's version exceeds ``since_version`` (or the timeout, or close).

        Returns the current snapshot either way; compare its ``version`` to know which.
        """
        snap = self._snapshot
        if snap.version > since_version:
            return snap
        with self._changed:
            self._changed.wait_for(
                lambda: self._snapshot.version > since_version or self._closed, timeout
            )
        return self._snapshot

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(snapshot, changed_ids)`` on the cache thread after each change.

        Keep callbacks short (hand work to your own thread or queue); one that
        raises is logged and does not stop the cache. Returns an unsubscribe function.
        """
        self._swap_subscribers(lambda current: (*current, callback))

        def unsubscribe() -> None:
            self._swap_subscribers(lambda current: tuple(s for s in current if s is not callback))

        return unsubscribe

    def _swap_subscribers(
        self, change: Callable[[tuple[Subscriber, ...]], tuple[Subscriber, ...]]
    ) -> None:
        # The new tuple is built outside the lock, and only an identity check and an
        # assignment run under it: building allocates, an allocation may run the
        # garbage collector, and a collected queue's finalizer unsubscribes, on this
        # very thread. Had that happened under the (non-reentrant) lock, it would
        # deadlock.
        while True:
            current = self._subscribers
            new = change(current)
            with self._subscribers_lock:
                if self._subscribers is current:
                    self._subscribers = new
                    return

    def __enter__(self) -> StatusCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_clocks(self, changes: dict[_Key, _Action]) -> None:
        """Compare the writers' timestamps with this process's clock (``health().clock_skew``).

        A write seen as it happens carries its writer's "now" in ``updated_at``. Ahead
        of ours is a clock apart whenever it is seen; behind only in an update of a
        record held here (a record loaded at start may simply be old).
        """
        now = utc_now()
        before = self._snapshot
        noted = False
        for job_id, job in changes.items():
            if job is None or job.updated_at is None:
                continue
            skew = (job.updated_at - now).total_seconds()
            held = before.get(job_id)
            live = held is not None and held.created_at == job.created_at and held.seq < job.seq
            writer = job.owner or f"the writer of {job_id}"
            if skew > CLOCK_SKEW_LIMIT or (live and skew < -CLOCK_SKEW_LIMIT):
                if len(self._skews) >= MAX_SKEWED and writer not in self._skews:
                    self._skews.pop(next(iter(self._skews)))
                self._skews[writer] = skew
                noted = True
            elif live and self._skews.pop(writer, None) is not None:
                noted = True
        if noted:
            self._skew_note = skew_note(self._skews)

    # -- applying what a backend read (the backends that read documents by job id) -----
    def _apply_load(self, records: Mapping[str, BatchJob | InvalidRecordError]) -> None:
        """A full load: ``records`` is every record there is; jobs not in it are gone."""
        invalid = {
            f"{job_id}{RECORD_SUFFIX}": outcome.reason
            for job_id, outcome in records.items()
            if isinstance(outcome, InvalidRecordError)
        }
        changes: dict[_Key, _Action]
        if not self._snapshot and not invalid and type(records) is dict:
            # A first load of valid records only (the usual start): taken as they are,
            # without a copy of a table that may hold 100,000 records.
            changes = cast("dict[_Key, _Action]", records)
        elif not self._snapshot:
            changes = {k: r for k, r in records.items() if not isinstance(r, InvalidRecordError)}
        else:
            changes = {}
            for job_id, outcome in records.items():
                if not isinstance(outcome, InvalidRecordError):
                    self._consider(job_id, outcome, changes, fresh=True)
        for job_id in self._snapshot:
            if job_id not in records:
                changes[job_id] = None
        self._set_invalid(invalid)
        if changes:
            self._publish(changes)

    def _apply_documents(
        self, docs: Mapping[str, _Doc | None], decode: Callable[[str, _Doc], BatchJob]
    ) -> None:
        """The jobs a feed named, read again: each one's document, None where it is gone."""
        changes: dict[_Key, _Action] = {}
        invalid = dict(self._invalid)
        for job_id, doc in docs.items():
            name = f"{job_id}{RECORD_SUFFIX}"
            if doc is None:
                invalid.pop(name, None)
                if job_id in self._snapshot:
                    changes[job_id] = None
                continue
            try:
                job = decode(job_id, doc)
            except InvalidRecordError as exc:
                invalid[name] = exc.reason  # the last good record stays
                continue
            invalid.pop(name, None)
            self._consider(job_id, job, changes, fresh=False)
        self._set_invalid(invalid)
        if changes:
            self._publish(changes)

    def _consider(
        self, job_id: str, job: BatchJob, changes: dict[_Key, _Action], *, fresh: bool
    ) -> None:
        """Take ``job`` unless it is what we have, or an older seq of the same incarnation."""
        current = self._snapshot.get(job_id)
        if current is not None:
            if job == current:
                return
            same = job.created_at == current.created_at
            if same and job.seq < current.seq and not fresh:
                return  # read before a write we already applied: never go backwards
        changes[job_id] = job

    def _set_invalid(self, invalid: dict[str, str]) -> None:
        if invalid != self._invalid:
            self._invalid = invalid
            self._invalid_view = MappingProxyType(dict(invalid))

    def _publish(self, changes: dict[_Key, _Action]) -> None:
        self._check_clocks(changes)
        snap = self._snapshot.with_changes(changes)
        self._snapshot = snap  # the one atomic swap readers see
        with self._changed:
            self._changed.notify_all()
        changed = frozenset(changes)
        outer, self._in_subscribers = self._in_subscribers, True  # (a subscriber may rescan)
        try:
            for callback in self._subscribers:
                try:
                    callback(snap, changed)
                except Exception:
                    logger.exception("statusbridge subscriber %r raised; continuing", callback)
        finally:
            self._in_subscribers = outer

    def _join_thread(self) -> None:
        """Wait for the cache thread to end after ``close()``, unless it is calling
        subscribers: one may be waiting for whoever closes (a lock the closer holds),
        and the thread ends by itself once they return."""
        if self._thread is not threading.current_thread() and not self._in_subscribers:
            self._thread.join(timeout=10)
