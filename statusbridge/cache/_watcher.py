"""The watchdog side of the cache: pick a backend, filter events, never let a handler die.

Known watchdog behaviour (7.1) this module works around:
- an exception in a handler kills the dispatcher thread, so ``dispatch`` catches all;
- on Linux the cache's own reads produce opened / closed-no-write events; reacting
  to them would make it re-read forever, so only writes, moves and deletes pass;
- inotify queue overflow is only logged and passed to the watch's internal
  ``on_queue_overflow`` callback, not to handlers: the watch hooks that callback
  (so detection does not depend on how the application configures logging), and
  where it cannot (another backend or watchdog version), a filter on watchdog's
  logger turns the log line into a rescan request;
- the watch does not survive deletion of the folder (the cache re-checks it);
- for every rename into the folder, inotify's move grouper searches its whole queue
  (twice) for the IN_MOVED_FROM half, though a store renames from ``.tmp``, which
  is not watched: with the queue behind a busy writer that is quadratic, so the
  search is skipped while no IN_MOVED_FROM is queued (``_MoveSearchGate``).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

__all__ = ["FILE_CHANGES", "EventSink", "FolderWatch", "backend_name", "native_backend"]

logger = logging.getLogger(__name__)

# The events a file's change makes (the SQLite cache asks for these only).
FILE_CHANGES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]
_RELEVANT: list[type[FileSystemEvent]] = [
    *FILE_CHANGES,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
_RELEVANT_TYPES = frozenset(cls.event_type for cls in _RELEVANT)

_BACKENDS = {
    "InotifyObserver": "inotify",
    "PollingObserver": "polling",
    "FSEventsObserver": "fsevents",
    "KqueueObserver": "kqueue",
    "WindowsApiObserver": "windows",
}


def backend_name(observer: BaseObserver) -> str:
    name = type(observer).__name__
    return _BACKENDS.get(name, name)


def native_backend() -> str:
    """The backend watchdog picks on this platform ("inotify", "fsevents", "windows", ...)."""
    name: str = getattr(Observer, "__name__", "native")  # a class, typed as a protocol
    return _BACKENDS.get(name, name)


class EventSink(Protocol):
    """What the watch reports to (the cache)."""

    def names_changed(self, names: list[str]) -> None: ...
    def folder_changed(self) -> None: ...
    def events_lost(self) -> None: ...
    def event_seen(self) -> None: ...


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: str, sink: EventSink) -> None:
        self._folder = folder
        # Weak: watchdog's threads must not keep the cache alive (see StatusCache).
        self._sink: Callable[[], EventSink | None] = weakref.ref(sink)

    def dispatch(self, event: FileSystemEvent) -> None:
        # Never raise: watchdog's dispatcher thread dies on a handler exception.
        try:
            if event.event_type not in _RELEVANT_TYPES:
                return
            sink = self._sink()
            if sink is None:
                return  # the cache was collected; its thread is stopping us
            sink.event_seen()
            paths = [event.src_path]
            if event.dest_path:
                paths.append(event.dest_path)
            names: list[str] = []
            for raw in paths:
                path = os.fsdecode(raw)
                if path == self._folder:
                    sink.folder_changed()
                    continue
                parent, name = os.path.split(path)
                if parent == self._folder and not name.startswith("."):
                    names.append(name)
            if names:
                sink.names_changed(names)
        except Exception:
            logger.exception("statusbridge event handler failed on %r (reconcile covers it)", event)


class FolderWatch:
    """One observer on one folder, with a fallback to polling."""

    def __init__(
        self,
        folder: str,
        sink: EventSink,
        *,
        polling: bool,
        poll_interval: float,
    ) -> None:
        self.folder = folder
        # The real folder: watchdog watches a path without following a symlink at its end
        # (inotify's IN_DONT_FOLLOW), so a folder reached through a link got no events.
        self.watched = os.path.realpath(folder)
        self._handler = _Handler(self.watched, sink)
        self.fallback_reason: str | None = None
        self.observer = self._start(polling=polling, poll_interval=poll_interval)
        if not _hook_overflow(self.observer, sink):
            _OverflowWatch.register(sink)
        _MoveSearchGate.install(self.observer)

    @property
    def backend(self) -> str:
        return backend_name(self.observer)

    def _start(self, *, polling: bool, poll_interval: float) -> BaseObserver:
        if not polling:
            native: BaseObserver | None = None
            try:
                # The constructor may already fail: watchdog's inotify observer opens its
                # inotify instance there (EMFILE = max_user_instances reached), and
                # schedule() adds the watch (ENOSPC = max_user_watches reached).
                native = Observer()
                native.start()
                native.schedule(self._handler, self.watched, event_filter=_RELEVANT)
            except OSError as exc:
                kind = backend_name(native) if native is not None else "native observer"
                self.fallback_reason = f"{kind} unavailable ({exc}); polling"
                logger.warning("statusbridge: %s for %s", self.fallback_reason, self.watched)
                if native is not None:
                    stop_observer(native)
            else:
                return native
        observer: BaseObserver = PollingObserver(timeout=poll_interval)
        observer.start()
        observer.schedule(self._handler, self.watched, event_filter=_RELEVANT)
        return observer

    def is_alive(self) -> bool:
        return self.observer.is_alive() and all(e.is_alive() for e in self.observer.emitters)

    def close(self) -> None:
        """``stop()``: the name the cache's shared life (``_Life``) releases resources by."""
        self.stop()

    def stop(self) -> None:
        stop_observer(self.observer)


def stop_observer(observer: BaseObserver) -> None:
    """Stop and join ``observer`` (bounded), and close what watchdog leaves open."""
    reader = getattr(observer, "_inotify_fd", None)  # watchdog 7's per-observer inotify reader
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception:
        logger.warning("stopping the watchdog observer failed", exc_info=True)
    _close_unread_inotify(reader)


def _close_unread_inotify(reader: Any) -> None:
    """Close what watchdog leaves open when an observer stops before its reader first read.

    watchdog 7.1's ``InotifyFD`` starts with ``_is_reading`` set, so a ``close()`` that comes
    before its thread's first read leaves the inotify instance and its wake-up pipe to that
    thread, which then sees ``_closed`` and exits without closing them: three descriptors
    and an inotify instance (a per-user limit, 128 by default) per cache created and
    dropped quickly, as a loaded machine shows. Only that state is handled here: the
    reader's thread has ended, it is closed, and it never cleared ``_is_reading``.
    """
    needed = ("_lock", "_closed", "_is_reading", "_close_resources", "is_alive", "join")
    if reader is None or not all(hasattr(reader, name) for name in needed):
        return
    try:
        if reader.is_alive():
            reader.join(timeout=5)
        if reader.is_alive():
            return
        with reader._lock:
            if reader._closed and reader._is_reading:
                reader._is_reading = False
                reader._close_resources()
    except Exception:
        logger.warning("closing a stopped inotify reader failed", exc_info=True)


def _hook_overflow(observer: BaseObserver, sink: EventSink) -> bool:
    """Report inotify queue overflow of this observer to ``sink``; False if it cannot.

    watchdog 7.1's InotifyFD calls ``on_queue_overflow()`` on each watch group of
    its instance (the emitter's ``_inotify``, made in ``on_thread_start``, so
    before ``schedule`` returns). The group's own handling runs first, as before.
    """
    ref = weakref.ref(sink)
    hooked = False
    for emitter in observer.emitters:
        group = getattr(emitter, "_inotify", None)
        original = getattr(group, "on_queue_overflow", None)
        if not callable(original):
            continue

        def on_queue_overflow(original: Callable[[], None] = original) -> None:
            try:
                original()
            finally:
                try:
                    target = ref()
                    if target is not None:
                        target.events_lost()
                except Exception:
                    logger.exception("statusbridge overflow hook failed")

        try:
            group.on_queue_overflow = on_queue_overflow  # type: ignore[union-attr]
        except AttributeError:  # e.g. a class with __slots__ in another version
            continue
        hooked = True
    return hooked


class _MoveSearchGate:
    """Skips watchdog's search for a rename's IN_MOVED_FROM half while none is queued.

    watchdog 7.1's ``InotifyMoveEventGrouper`` keeps one queue of every event and,
    for each IN_MOVED_TO, scans all of it for the IN_MOVED_FROM with the same cookie
    (``get_queued_moved_from_event``, then ``_group_moved_to_event``). The gate counts
    IN_MOVED_FROM events in and out, each counter written by one thread only: those
    put, and those paired, on the reading thread (which also searches); those handed
    on, on the emitter's thread. Queued ones are at most put - paired - handed on (a
    purge removes some uncounted), so a search skipped at zero would have found nothing.
    """

    _NEEDED = ("put_event", "read_event", "get_queued_moved_from_event", "_group_moved_to_event")

    def __init__(self, grouper: Any) -> None:
        self.put = self.paired = self.handed_on = 0
        self._put_event = grouper.put_event
        self._read_event = grouper.read_event
        self._find = grouper.get_queued_moved_from_event
        self._group = grouper._group_moved_to_event

    @classmethod
    def install(cls, observer: BaseObserver) -> None:
        for emitter in observer.emitters:
            grouper = getattr(getattr(emitter, "_inotify", None), "_move_event_grouper", None)
            if grouper is None or not all(callable(getattr(grouper, n, None)) for n in cls._NEEDED):
                continue  # another backend or watchdog version: its own search stays
            gate = cls(grouper)
            try:
                grouper.put_event = gate.put_event
                grouper.read_event = gate.read_event
                grouper.get_queued_moved_from_event = gate.get_queued_moved_from_event
                grouper._group_moved_to_event = gate.group_moved_to_event
            except AttributeError:  # e.g. __slots__ in another version
                continue

    def _none_waiting(self) -> bool:
        return self.put - self.paired - self.handed_on <= 0

    def put_event(self, event: Any) -> None:
        if event.ev.is_moved_from:
            self.put += 1  # before it is queued, so the count never runs below the queue
        self._put_event(event)

    def read_event(self) -> Any:
        event = self._read_event()
        if event is not None and not isinstance(event, tuple) and event.ev.is_moved_from:
            self.handed_on += 1
        return event

    def get_queued_moved_from_event(self, cookie: int) -> Any:
        return None if self._none_waiting() else self._find(cookie)

    def group_moved_to_event(self, to_event: Any) -> Any:
        if self._none_waiting():
            return to_event
        grouped = self._group(to_event)
        if isinstance(grouped, tuple):
            self.paired += 1
        return grouped


class _OverflowWatch(logging.Filter):
    """Turns watchdog's 'Inotify queue overflowed' log line into a rescan request."""

    _sinks: ClassVar[weakref.WeakSet[EventSink]] = weakref.WeakSet()
    _installed: ClassVar[bool] = False

    @classmethod
    def register(cls, sink: EventSink) -> None:
        cls._sinks.add(sink)
        if not cls._installed:
            logging.getLogger("watchdog.observers.inotify_c").addFilter(cls())
            cls._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if "overflow" in str(record.msg).lower():
                for sink in list(self._sinks):
                    sink.events_lost()
        except Exception:
            logger.exception("statusbridge overflow hook failed")
        return True
