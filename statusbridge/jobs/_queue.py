"""BatchQueue: run functions in threads or processes, with their status in a StatusStore.

All status goes through the store (write side); all status reads come from the
cache (read side), so ``get_job_status`` never touches the disk.

A facade over named parts, each owning its state and its lock:

- ``_submissions``: the jobs handed to the pool, the batch feeds, starts to try again;
- ``_supervisor``: the thread that decides how each job ends (one per queue);
- ``_deferred``: PENDING records of thread jobs held in memory until due;
- ``_write_retries``: changes whose write failed, written again later;
- ``_overlay``: read-your-writes until the cache shows this queue's writes;
- ``_housekeeping``: dead workers, abandoned jobs, retention.

Only a job no other process can name waits in memory (a generated id, run in
this process): jobs others can name (a given id, a batch id: BatchManager's
jobs) and jobs that run elsewhere (process pools, Dask) are written at submit,
as is every job with ``record_delay=0``.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import queue as stdlib_queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from functools import partial
from typing import Any, Literal

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.errors import UnknownJobError
from statusbridge.jobs._batch_feed import BatchFeed, pending_fields
from statusbridge.jobs._cancel import request_cancel
from statusbridge.jobs._closing import ShutsDown
from statusbridge.jobs._context import running_context, signal_cancel
from statusbridge.jobs._housekeeping import LimitField, Limits, MaintenanceReport, RetentionHook
from statusbridge.jobs._lifecycle import Lifecycle
from statusbridge.jobs._options import check_queue_options
from statusbridge.jobs._overlay import QueueView
from statusbridge.jobs._parts import Parts, Timing
from statusbridge.jobs._submissions import new_job_id, write_new
from statusbridge.jobs._supervisor import WAKE
from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.record._frozen import freeze
from statusbridge.record._model import utc_now

__all__ = ["BatchQueue", "MaintenanceReport"]

logger = logging.getLogger(__name__)

# Longest a wait() sleeps between looks at its jobs.
WAIT_SLICE = 0.1

CANCELLED_BEFORE_START: dict[str, Any] = {
    "status": BatchStatus.CANCELLED,
    "cancel_requested": True,
    "message": "cancelled before it started",
}


class BatchQueue(ShutsDown):
    """Run ``func(params)`` jobs with at most ``max_concurrent`` at a time.

    ``executor`` is "thread" (default), "process" (a spawn-based process pool) or
    any ``concurrent.futures.Executor`` (it is not shut down by ``shutdown``).

    When a worker process dies, only the jobs that were running in its pool
    fail ("worker process died (exit code 3)"); jobs it had not started run on a
    fresh pool.

    ``record_delay``: how long a thread job no other process can name may live
    in memory before its record is written (0: every state is written when it
    happens; ``math.inf``: only its end is written); a job that ends sooner is
    written once.

    Numeric options are checked here (``TypeError``/``ValueError`` naming the
    option). Where 0 or ``math.inf`` mean something: ``max_completed_jobs=0``
    keeps no finished record, ``retention_hours=0`` removes finished records at
    the next pass (``None``: never by age), ``progress_interval=0`` writes every
    progress report, ``heartbeat_timeout``/``pending_timeout=math.inf`` never
    give up on a job whose owner cannot be asked. Intervals that pace a loop
    (``heartbeat_interval``, ``maintenance_interval``) must be above 0.

    Examples:
        >>> import tempfile
        >>> with BatchQueue(status_dir=tempfile.mkdtemp()) as queue:
        ...     job_id = queue.submit(lambda params: params["x"] * 2, {"x": 21})
        ...     queue.wait([job_id], timeout=10)
        ...     queue.get_job_status(job_id).result
        True
        42
    """

    # Read by housekeeping at each pass: a change takes effect at the next.
    max_completed_jobs: LimitField[int] = LimitField()
    retention_hours: LimitField[float | None] = LimitField()
    heartbeat_timeout: LimitField[float] = LimitField()
    pending_timeout: LimitField[float] = LimitField()

    def __init__(
        self,
        max_concurrent: int = 2,
        max_completed_jobs: int = 1000,
        status_dir: str | os.PathLike[str] = "batch_status",
        *,
        executor: Literal["thread", "process"] | Executor = "thread",
        cache: StatusCache | None = None,
        progress_interval: float = 0.1,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float | None = None,
        retention_hours: float | None = 24.0,
        maintenance_interval: float = 10.0,
        pending_timeout: float = 24 * 3600.0,
        record_delay: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        check_queue_options(
            {
                "max_concurrent": max_concurrent,
                "max_completed_jobs": max_completed_jobs,
                "progress_interval": progress_interval,
                "heartbeat_interval": heartbeat_interval,
                "heartbeat_timeout": heartbeat_timeout,
                "retention_hours": retention_hours,
                "maintenance_interval": maintenance_interval,
                "pending_timeout": pending_timeout,
                "record_delay": record_delay,
            }
        )
        self.max_concurrent = max_concurrent
        self.progress_interval = progress_interval
        self.heartbeat_interval = heartbeat_interval
        # How long a thread job's state may live in memory only (0: every state
        # is written when it happens). See ``_deferred``.
        self.record_delay = record_delay
        self._clock = clock
        self._events: stdlib_queue.SimpleQueue[Any] = stdlib_queue.SimpleQueue()
        if heartbeat_timeout is None:
            heartbeat_timeout = max(60.0, 6 * heartbeat_interval)
        limits = Limits(heartbeat_timeout, pending_timeout, max_completed_jobs, retention_hours)
        self._parts = parts = Parts.build(
            status_dir,
            executor=executor,
            max_concurrent=max_concurrent,
            cache=cache,
            clock=clock,
            timing=Timing(progress_interval, heartbeat_interval, record_delay),
            limits=limits,
            owner=weakref.ref(self),
            post=self._events.put,
            wake=partial(self._events.put, WAKE),
        )
        self.limits = limits
        self.store, self.cache = parts.store, parts.cache
        self._folder = self.store.location
        self._pool, self._overlay, self._retries = parts.pool, parts.overlay, parts.retries
        self._deferred, self._submissions = parts.deferred, parts.submissions
        self.maintain()
        self._life = Lifecycle(
            self,
            parts,
            self._events,
            owns_cache=cache is None,
            maintenance_interval=maintenance_interval,
        )
        self._supervisor = self._life.supervisor

    # -- submitting -----------------------------------------------------------
    def check_submittable(self, func: Callable[[Any], Any]) -> None:
        """Raise now what ``submit(func, ...)`` would raise about ``func`` or this queue."""
        if self._submissions.closed:
            raise RuntimeError("this BatchQueue was shut down; create a new one")
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        if self._pool.pickles:
            try:
                pickle.dumps(func)
            except Exception as exc:
                raise TypeError(
                    f"cannot send {func!r} to a worker process: {exc}. Process executors need "
                    "a function defined at module level (not a lambda or a local function)."
                ) from exc

    def submit(
        self,
        func: Callable[[Any], Any],
        params: Any = None,
        *,
        job_id: str | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Queue ``func(params)``; returns the job id (a new one unless given).

        ``params`` must be JSON-serialisable (it is stored in the record); the job
        receives it as plain dicts and lists.
        """
        self.check_submittable(func)
        given_id = job_id is not None
        job_id = validate_job_id(job_id) if job_id is not None else new_job_id()
        if batch_id is not None:
            validate_job_id(batch_id)
        freeze(params, _path="params")
        now = self._clock()
        fields = {**pending_fields(params, batch_id), "created_at": now}
        # Only a job no other process can name may wait in memory: a generated id
        # is new to all, while a given id or a batch id is known elsewhere (batch
        # definitions, ``cancel --batch``), so those records are written now.
        deferred = (
            not given_id and batch_id is None and not self._pool.pickles and self.record_delay > 0
        )
        if deferred:
            job = BatchJob(id=job_id, seq=1, updated_at=now, **fields)
        else:
            job = write_new(self.store, self._retries, job_id, fields, given_id=given_id)
        claim = self._deferred.claim if deferred else None
        spec = self._parts.specs.spec(job_id, func, claim=claim)
        # A write kept for an earlier run of this id: that run's record is gone.
        self._retries.drop(job_id)
        self._overlay.show([job])
        if deferred:
            self._deferred.hold(job_id, fields)
        try:
            self._submissions.start(spec, attempts=1)
        except Exception as exc:
            why = f"could not submit: {type(exc).__name__}: {exc}"
            # A job still in memory gets its record now, failed: written later
            # as PENDING, it would wait for a worker that never comes.
            if not self._deferred.write_now(job_id, status=BatchStatus.FAILED, error_message=why):
                self._supervisor.mark_if_unfinished(job_id, BatchStatus.FAILED, why)
            raise
        return job_id

    def submit_batch(
        self,
        func: Callable[[Any], Any],
        jobs: Sequence[tuple[str, Any]],
        *,
        batch_id: str,
        stop: Callable[[str | None], bool],
    ) -> None:
        """Queue ``func(params)`` for every ``(job_id, params)`` of a batch; returns at once.

        The jobs' PENDING records are written and the jobs submitted in the
        background, in order (see ``statusbridge.jobs._batch_feed``); a job that
        already has a record is skipped. ``stop(None)`` says whether the batch was
        cancelled, ``stop(job_id)`` also whether that job was: asked per chunk and
        before a job starts. ``wait()`` and ``running`` count the jobs not fed yet.
        """
        self.check_submittable(func)
        validate_job_id(batch_id)
        self._pool.note_import_path()  # workers may be spawned after the caller's path changed
        feed = BatchFeed(batch_id, func, jobs, stop)
        self._submissions.add_feed(feed)
        threading.Thread(
            target=feed.run, args=(self._supervisor,), name="statusbridge-batch-feed", daemon=True
        ).start()

    def stop_feed(self, batch_id: str) -> set[str]:
        """The batch was cancelled here: its feed records the jobs not fed yet CANCELLED.

        Returns the ids of its jobs not fed yet (none of them will start).
        """
        return self._submissions.stop_feed(batch_id)

    def add_retention_hook(
        self, hook: RetentionHook, *, settle: Callable[[Snapshot], object] | None = None
    ) -> None:
        """``hook(snapshot)`` returns batch ids whose records retention must keep for now.

        ``settle(snapshot)``, called on its own before each retention pass, saves what
        must outlive the records (a manager: the final counts of batches that ended).
        Both are held weakly (a bound method of an object that owns this queue is fine).
        """
        self._parts.housekeeping.add_retention_hook(hook, settle)

    def add_idle_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs (on the supervisor thread) each time the last job submitted
        here is done. Held weakly, like retention hooks."""
        self._submissions.add_idle_hook(hook)

    def add_cancel_hook(self, hook: Callable[[str], bool]) -> None:
        """``hook(job_id)`` cancels a job with no record that it knows (a manager: a started
        batch's job), asked by ``cancel`` before "unknown". Held weakly, like idle hooks."""
        self._submissions.add_cancel_hook(hook)

    # -- control -------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Cancel a job: a pending one never starts, a running one is asked to stop.

        Works for jobs of any process on this folder (the request travels in the file,
        see also ``add_cancel_hook``). False if the job is unknown or already finished.
        """
        local = self._overlay.get(job_id)
        if job_id in self._retries and local is not None and local.is_finished:
            return False  # ended; only its record is still to be written
        if self._deferred.write_now(job_id, **CANCELLED_BEFORE_START):
            sub = self._submissions.get(job_id)
            if sub is not None:
                sub.future.cancel()
            return True
        feed = self._submissions.feeding(job_id)
        if feed is not None and feed.cancel_unfed(self.store, job_id):
            return True
        ctx = running_context(job_id)
        if ctx is not None and not ctx.written:
            ctx.flush()  # running in memory only: its record first, then the request in it
        asked = request_cancel(self.store, job_id)
        if not asked and not self._submissions.cancel_unrecorded(job_id):
            return False
        sub = self._submissions.get(job_id)
        shown = self.get_job_status(job_id)
        seen_running = shown is not None and shown.status is BatchStatus.RUNNING
        if sub is not None and (self._pool.owned or not seen_running):
            # An executor given to us (Dask's) may report a remote running task as not
            # started and "cancel" it while it runs on: the job is asked through its record.
            sub.future.cancel()
        signal_cancel(job_id)
        return True

    # -- reading (from the cache only) ----------------------------------------
    def get_job_status(self, job_id: str) -> BatchJob | None:
        """The job's latest known record, from memory (never from disk)."""
        cached = self.cache.get(job_id)
        return self._overlay.view(job_id, cached, retrying=job_id in self._retries)

    def unseen_records(self, snapshot: Snapshot) -> list[BatchJob]:
        """Records written here that ``snapshot`` does not show yet (read-your-writes).

        O(jobs in flight here): what ``get_job_status`` would answer instead of
        the snapshot, for summaries that start from the snapshot's counts.
        """
        return self._overlay.unseen(snapshot, self._retries.ids())

    @property
    def max_record_bytes(self) -> int:
        """The largest record its store accepts (what a batch's jobs are checked against)."""
        return self.store.max_bytes

    def view(self) -> QueueView:
        """The cache's snapshot with the records written here that it does not show yet:
        what summaries built from the snapshot's counts need (read-your-writes)."""
        snapshot = self.cache.snapshot()
        return QueueView(snapshot, tuple(self.unseen_records(snapshot)))

    def snapshot(self) -> Snapshot:
        """The cache's current snapshot of every job in the folder."""
        return self.cache.snapshot()

    @property
    def running(self) -> int:
        """Jobs submitted here that are not done yet (pending or running)."""
        return self._submissions.running

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        """Block until these jobs (default: all submitted here and not done) are finished.

        Returns False on timeout; raises UnknownJobError for an id that names no
        job. Waits on cache changes, not by polling the disk.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if job_ids is None and not self._submissions.join_feeds(deadline):
            return False
        remaining_ids = list(job_ids) if job_ids is not None else self._submissions.ids()
        feeding = self._submissions.feeding
        # The ids submitted here (the default) name jobs: only the caller's are checked.
        unknown = [] if job_ids is None else [
            i
            for i in remaining_ids
            if self.get_job_status(i) is None
            and not self._overlay.was_removed(i)
            and feeding(i) is None
        ]  # fmt: skip
        if unknown:
            raise UnknownJobError(f"no such job: {', '.join(map(repr, unknown[:5]))}")
        in_line = collections.deque(remaining_ids)
        while True:
            snap = self.cache.snapshot()
            # Only the first unfinished job is looked at after each change (a finished
            # one stays finished), so waiting on many jobs costs O(jobs + changes).
            # A job that vanished meanwhile finished first (retention removed it).
            while in_line and ((job := self.get_job_status(in_line[0])) is None or job.is_finished):
                if job is None and feeding(in_line[0]) is not None:
                    break  # not recorded yet: its batch's feed is on its way to it
                in_line.popleft()
            if not in_line:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            # Woken by the cache; the slice also catches a change made only to our
            # read-your-writes entries (no disk is read either way).
            slice_ = WAIT_SLICE if remaining is None else min(remaining, WAIT_SLICE)
            self.cache.wait_for_change(snap.version, slice_)

    # -- housekeeping --------------------------------------------------------
    def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """Fail jobs whose worker died, fail abandoned pending jobs, apply retention.

        Runs at start and every ``maintenance_interval`` seconds; ``now`` is a
        parameter so heartbeat expiry can be tested without waiting.
        """
        return self._parts.housekeeping.maintain(now)

    # -- life cycle ---------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop accepting jobs and release the pool, cache, store and thread.

        With ``wait``, first let running and queued jobs finish; without, return at
        once and release everything when they have. May be called again (a later
        ``wait=True`` then waits).
        """
        self._life.shutdown(
            wait, cancel_pending=cancel_pending, cancel=self.cancel, lookup=self.get_job_status
        )

    def stop_now(self, timeout: float = 5.0) -> bool:
        """Shut down within about ``timeout`` seconds, for a program that is going away.

        Pending jobs end CANCELLED, running ones are asked to stop; worker processes whose
        jobs are still running after ``timeout`` are killed, and those jobs end FAILED as
        when a worker dies. Worker threads cannot be killed: a job on a thread that ignores
        its cancel keeps running. True if every job had ended by the time it returned.
        """
        running = self._submissions.ids()
        self.shutdown(wait=False, cancel_pending=True)
        self._life.cancel_all(running, cancel=self.cancel, lookup=self.get_job_status)
        ended = self.wait(running, timeout=timeout)
        if not ended:
            self._life.kill_workers()
            ended = self.wait(running, timeout=timeout)
        # Idle workers exit only once the pool hands them their stop, on its own thread: a
        # process that ends right after this (a server re-raising SIGTERM) would otherwise
        # leave them running, each holding its own end of the pool's queue.
        self._pool.join_workers(timeout)
        return ended

    def read(self, job_id: str) -> BatchJob | None:
        """The job's record as stored now: a read of the store, for a caller that
        must know before the cache could show it (``get_job_status`` never reads)."""
        return self.store.read(job_id)

    def __repr__(self) -> str:
        return f"<BatchQueue {self._folder!r} running={len(self._submissions.subs)}>"
