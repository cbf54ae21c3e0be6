"""The cache thread's life, shared by every backend: what the thread and the finalizer share.

Neither the cache thread nor a backend's own threads hold a strong reference to
the cache: ``_run`` holds a weak one between steps, so a cache dropped without
``close()`` is collected, and its finalizer (``_Life.end``) makes the thread
release what the backend left in ``_Life.resources`` and end.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from statusbridge.cache._cache import StatusCache
    from statusbridge.cache._snapshot import Snapshot

__all__ = ["STEP_GAP", "Releasable", "_Life", "_run"]

logger = logging.getLogger(__name__)

# Seconds from the end of one step of the cache thread to the start of the next. A
# change after a quiet spell is taken at once; under a stream of changes (thousands a
# second from a queue's workers) each step takes those of the last few milliseconds
# together instead of waking for each one, and wakes far less often the writers'
# threads, whose interpreter lock it would take.
STEP_GAP = 0.002


class Releasable(Protocol):
    def close(self) -> None: ...


class _Life:
    """What the cache thread and the finalizer share, so that neither keeps the cache alive.

    ``resources`` (an observer, connections) are closed by whoever ends the cache:
    ``close()``, or the cache thread as it ends after the cache was collected.
    """

    def __init__(self) -> None:
        self.closed = False
        self.wake = threading.Event()
        self.lock = threading.Lock()  # guards resources and rescans_waiting
        self.resources: dict[str, Releasable] = {}
        self.rescans_waiting: list[Future[Snapshot]] = []

    def end(self) -> None:
        """Called by the finalizer of a cache nobody closed: the cache thread does the rest."""
        self.closed = True
        self.wake.set()

    def hold(self, name: str, resource: Releasable | None) -> None:
        """Keep ``resource`` under ``name`` (None: forget it); the one it replaces is not closed."""
        with self.lock:
            if resource is None:
                self.resources.pop(name, None)
            else:
                self.resources[name] = resource

    def release(self, name: str | None = None) -> None:
        """Close one resource (or all of them) and forget it."""
        with self.lock:
            if name is None:
                taken = list(self.resources.values())
                self.resources.clear()
            else:
                one = self.resources.pop(name, None)
                taken = [] if one is None else [one]
        for resource in taken:
            try:
                resource.close()
            except Exception:
                logger.debug("statusbridge: releasing %r failed", resource, exc_info=True)

    def take_rescans(self) -> list[Future[Snapshot]]:
        with self.lock:
            waiting, self.rescans_waiting = self.rescans_waiting, []
        return waiting


def _run(ref: weakref.ref[StatusCache], life: _Life) -> None:
    """The cache thread. It holds the cache only while it works on it, never while waiting."""
    last_step = -math.inf
    try:
        while not life.closed:
            cache = ref()
            if cache is None:
                break
            timeout = cache._seconds_to_next_step()
            del cache
            if timeout > 0:
                life.wake.wait(timeout)
            rest = last_step + STEP_GAP - time.monotonic()
            if rest > 0 and not life.closed:
                time.sleep(rest)  # what lands meanwhile joins this step
            life.wake.clear()
            if life.closed:
                break
            cache = ref()
            if cache is None:
                break
            cache._step()
            last_step = time.monotonic()
            del cache
    finally:
        # After close() this finds nothing left to do; after the cache was collected
        # unclosed, it releases the observer and connections (never from a finalizer,
        # which may run on one of watchdog's own threads, where joining them would fail).
        life.release()
