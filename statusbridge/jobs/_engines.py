"""One batch engine per process for the same locations and options, shared by managers.

Managers built again and again for the same locations (a Streamlit script runs
``manager = BatchManager()`` on every rerun) share one engine per process: one
queue, one cache, one pool. The engine is released when the last manager using
it is shut down or collected and its jobs are done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from statusbridge.cache import StatusCache
from statusbridge.jobs._batch_engine import BatchEngine
from statusbridge.jobs._queue import BatchQueue
from statusbridge.record._model import utc_now
from statusbridge.store._location import is_url
from statusbridge.store._shelf import open_shelf

__all__ = ["EngineOptions", "attach", "detach", "release_if_unused"]

_engines: dict[Hashable, BatchEngine] = {}
_engines_lock = threading.RLock()


@dataclass(frozen=True)
class EngineOptions:
    """What a manager asks for; managers asking the same share an engine."""

    batch_dir: str | os.PathLike[str]
    status_dir: str | os.PathLike[str]
    max_concurrent: int
    executor: Literal["thread", "process"] | Executor
    max_completed_jobs: int
    retention_hours: float | None
    clock: Callable[[], datetime] = utc_now
    cache: StatusCache | None = None
    queue_options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> Hashable | None:
        """The registry's key; None when this engine cannot be shared (its own
        executor, clock or cache, or an unhashable option)."""
        if not isinstance(self.executor, str) or self.clock is not utc_now or self.cache:
            return None
        try:
            key = (
                _location_key(self.batch_dir),
                _location_key(self.status_dir),
                self.max_concurrent,
                self.executor,
                self.max_completed_jobs,
                self.retention_hours,
                frozenset(self.queue_options.items()),
            )
            hash(key)
        except TypeError:
            return None
        return key

    def build(self) -> BatchEngine:
        shelf = open_shelf(self.batch_dir)
        queue = BatchQueue(
            self.max_concurrent,
            self.max_completed_jobs,
            self.status_dir,
            executor=self.executor,
            retention_hours=self.retention_hours,
            clock=self.clock,
            cache=self.cache,
            **self.queue_options,
        )
        return BatchEngine(shelf, queue, self.retention_hours, self.clock)


def attach(options: EngineOptions) -> BatchEngine:
    """The engine for ``options`` (shared where it can be), with one more handle on it."""
    key = options.key()
    with _engines_lock:
        engine = _engines.get(key) if key is not None else None
        if engine is None:
            engine = options.build()
            engine.key = key
            engine.when_idle = release_if_unused
            if key is not None:
                _engines[key] = engine
        engine.handles += 1
    return engine


def release_if_unused(engine: BatchEngine, *, wait: bool = False) -> None:
    """Shut the engine's queue down once no manager uses it and its jobs are done."""
    with _engines_lock:
        if engine.handles > 0:
            return
        if engine.queue.running and not wait:
            return  # its queue tells us (when_idle) when its jobs are done
        if engine.key is not None and _engines.get(engine.key) is engine:
            del _engines[engine.key]
    engine.queue.shutdown(wait=wait)
    engine.shelf.close()  # its lock descriptor or connection (reopened if used again)


def detach(engine: BatchEngine, wait: bool) -> None:
    with _engines_lock:
        engine.handles -= 1
    release_if_unused(engine, wait=wait)


def _location_key(location: str | os.PathLike[str]) -> str:
    return str(location) if is_url(location) else os.path.realpath(location)
