"""A queue's parts, built and wired together once: what the facade and the supervisor share.

None of the parts refers to the queue itself (the supervisor thread holds
them, and the queue must stay collectable); ``Owned`` is what the queue's
finalizer releases.
"""

from __future__ import annotations

import os
import queue as stdlib_queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from statusbridge.cache import StatusCache
from statusbridge.jobs._context import JobContext
from statusbridge.jobs._deferred import DeferredRecords
from statusbridge.jobs._housekeeping import Housekeeping, Limits
from statusbridge.jobs._overlay import Overlay
from statusbridge.jobs._pool import WorkerPool
from statusbridge.jobs._runner import RunSpec
from statusbridge.jobs._submissions import Submissions
from statusbridge.jobs._write_retries import WriteRetries
from statusbridge.store import StatusStore

__all__ = ["Owned", "Parts", "Specs", "Timing"]


# How long a release waits for the supervisor to write the ends of jobs that ended.
DRAIN_SECONDS = 30.0


@dataclass(frozen=True)
class Timing:
    """How often a job writes progress and heartbeats, and how long it may live in memory."""

    progress_interval: float
    heartbeat_interval: float
    record_delay: float


@dataclass(frozen=True)
class Specs:
    """How this queue's jobs run: what each ``RunSpec`` gets besides the job."""

    folder: str
    store: StatusStore
    timing: Timing
    pickles: bool  # the pool runs jobs in other processes

    def spec(
        self,
        job_id: str,
        func: Callable[[Any], Any],
        *,
        claim: Callable[[JobContext], tuple[Any] | None] | None = None,
        recorded: bool = False,
    ) -> RunSpec:
        """``recorded``: its PENDING record exists (a batch's job): its RUNNING write can
        wait as for a job in memory, so one that ends within ``record_delay`` writes only
        its end. So can that of a job in memory (``claim``) whose PENDING record was
        written while it waited."""
        deferrable = (recorded or claim is not None) and not self.pickles
        return RunSpec(
            self.folder,
            job_id,
            func,
            progress_interval=self.timing.progress_interval,
            heartbeat_interval=self.timing.heartbeat_interval,
            store=self.store,
            claim=claim,
            defer_start=self.timing.record_delay if deferrable else 0.0,
            write_behind=not self.pickles,
        )


@dataclass(frozen=True)
class Parts:
    """What the supervisor works with (none of it refers to the queue itself)."""

    store: StatusStore
    cache: StatusCache
    clock: Callable[[], datetime]
    specs: Specs
    pool: WorkerPool
    submissions: Submissions
    deferred: DeferredRecords
    retries: WriteRetries
    overlay: Overlay
    housekeeping: Housekeeping

    @classmethod
    def build(
        cls,
        status_dir: str | os.PathLike[str],
        *,
        executor: Literal["thread", "process"] | Executor,
        max_concurrent: int,
        cache: StatusCache | None,
        clock: Callable[[], datetime],
        timing: Timing,
        limits: Limits,
        owner: weakref.ref[Any],
        post: Callable[[Any], None],
        wake: Callable[[], None],
    ) -> Parts:
        """The parts of a queue on ``status_dir``; ``post`` hands events to its supervisor."""
        pool = WorkerPool(executor, max_concurrent)
        store = StatusStore(status_dir, clock=clock)
        cache = cache if cache is not None else StatusCache(status_dir)
        cache.write_through(store)  # (the store goes with the queue: no undo needed)
        overlay = Overlay(store, cache)
        retries = WriteRetries(store, cache, overlay, clock=clock, wake=wake)
        deferred = DeferredRecords(
            store, overlay, record_delay=timing.record_delay, clock=clock, wake=wake
        )
        overlay.held = deferred.__contains__
        overlay.retrying = retries.__contains__
        submissions = Submissions(pool, owner, post)
        housekeeping = Housekeeping(store, cache, overlay, submissions, limits=limits, clock=clock)
        specs = Specs(store.location, store, timing, pool.pickles)
        return cls(
            store, cache, clock, specs, pool, submissions, deferred, retries, overlay, housekeeping
        )


@dataclass(frozen=True)
class Owned:
    """What a queue owns; released through weakref.finalize, so it never refers to the queue."""

    pool: WorkerPool
    cache: StatusCache | None
    unsubscribe: Callable[[], None]
    store: StatusStore
    events: stdlib_queue.SimpleQueue[Any]
    stopped: threading.Event
    supervisor: threading.Thread
    drain: Callable[[], None]  # asks the supervisor to handle what was posted, then stop

    def release(self) -> None:
        if self.supervisor is not threading.current_thread() and self.supervisor.is_alive():
            # The supervisor writes jobs' ends: those that ended (at interpreter exit, the
            # pool's threads were joined first) are written before the store closes.
            self.drain()
            self.supervisor.join(timeout=DRAIN_SECONDS)
        self.stopped.set()
        self.events.put(None)  # wake the supervisor so it sees ``stopped``
        self.pool.shutdown(wait=False)
        self.unsubscribe()
        if self.cache is not None:
            self.cache.close()
        self.store.close()
        if self.supervisor is not threading.current_thread() and self.supervisor.is_alive():
            self.supervisor.join(timeout=10)
