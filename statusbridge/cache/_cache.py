"""StatusCache: the read side. Keeps an immutable Snapshot current from a backend's changes.

``StatusCache(location)`` opens the backend the location names: a folder gives a
``FolderCache`` (file-system events, ``_folder_cache``), a ``redis://`` URL a
``RedisCache`` (initial load + change stream, ``_redis_cache``). A backend only
finds out what changed and calls ``_publish``; what every backend shares lives
here: the snapshot swap, ``wait_for_change``, ``subscribe`` and the health counters.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statusbridge.cache._snapshot import Snapshot
from statusbridge.record import BatchJob
from statusbridge.store import DEFAULT_MAX_BYTES
from statusbridge.store._location import RedisLocation, parse_location, require_redis_client

__all__ = ["CacheHealth", "StatusCache", "Subscriber"]

logger = logging.getLogger(__name__)

Subscriber = Callable[[Snapshot, frozenset[str]], None]

_Key = str  # job id
_Action = BatchJob | None  # new record, or None for "gone"


@dataclass(frozen=True)
class CacheHealth:
    """What the cache knows about itself; cheap to take, safe to show in a UI."""

    running: bool
    backend: str
    version: int
    jobs: int
    events: int
    rescans: int
    last_event_at: datetime | None
    invalid_files: Mapping[str, str]
    directory: str
    directory_present: bool
    observer_restarts: int
    last_error: str | None
    backend_note: str | None = None  # why the backend is not the platform's native one
    watched_directory: str | None = None  # the real folder, when ``directory`` is a symlink


class StatusCache:
    """An immutable in-memory ``Snapshot`` of every job at a location, kept current.

    Starts on construction (initial load, then following changes); use as a
    context manager or call ``close()``. Reading (``snapshot``, ``get``) does no
    I/O and takes no lock, whatever the backend.
    """

    _snapshot: Snapshot
    _thread: threading.Thread

    def __new__(
        cls, directory: str | os.PathLike[str] = "batch_status", *args: Any, **kw: Any
    ) -> StatusCache:
        backend: type[StatusCache] = cls
        if cls is StatusCache:
            if isinstance(parse_location(directory), RedisLocation):
                require_redis_client()
                from statusbridge.cache._redis_cache import RedisCache

                backend = RedisCache
            else:
                from statusbridge.cache._folder_cache import FolderCache

                backend = FolderCache
        return super().__new__(backend)

    def __init__(
        self,
        directory: str | os.PathLike[str] = "batch_status",
        *,
        reconcile_interval: float = 30.0,
        polling: bool = False,
        poll_interval: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:  # pragma: no cover - replaced by every backend
        """Every option of every backend, so that a type checker sees them all.

        ``polling`` and ``poll_interval`` apply to folders; ``reconcile_interval``
        is the period of the safety-net check on every backend.
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

    # -- what each backend supplies ---------------------------------------------------
    @property
    def _closed(self) -> bool:
        raise NotImplementedError

    def health(self) -> CacheHealth:
        raise NotImplementedError

    def rescan(self) -> Snapshot:
        """Load everything again now and return the resulting snapshot."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def versions_of(self, jobs: Iterable[BatchJob]) -> dict[str, bytes]:
        """Opaque versions of those of ``jobs`` this cache holds as they are now.

        For ``StatusStore.delete_if_unchanged(versions=...)`` on the same location:
        a folder store checks a file's signature instead of reading it back. Jobs
        missing from the answer are checked the long way; a backend without such
        versions answers ``{}``.
        """
        return {}

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

    def _publish(self, changes: dict[_Key, _Action]) -> None:
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
