"""BatchQueue: run functions in threads or processes, with their status in a StatusStore.

All status goes through the store (write side); all status reads come from the
cache (read side), so ``get_job_status`` never touches the disk.

Threads and locks: a future's done-callback only posts ``(job_id, future)`` to
a ``SimpleQueue``; one supervisor thread per queue does everything else (final
records, pool replacement, re-submitting jobs a dead pool never started,
retention, heartbeat checks). No callback ever takes a lock, so nothing can
deadlock with a pool that runs callbacks under its own lock (CPython >= 3.12).

Deferred records: a thread job with a generated id starts life in memory. Its
PENDING record is written only if it still waits after ``record_delay``; a
worker that takes it first claims it from memory, and the job's record is then
created by its first write (after ``record_delay`` of running, or at its end).
A short job thus costs one file write instead of three. Nothing another
process could act on is lost: until a record exists, no one else knows the
job's id, and this queue's own ``cancel`` and ``get_job_status`` see the
memory. Jobs others can name (a given id, a batch id: BatchManager's jobs) and
jobs that run elsewhere (process pools, Dask) are written at submit, as is
every job with ``record_delay=0``.

Ownership: the supervisor holds the queue only weakly between events, so a
queue dropped without ``shutdown()`` is collected once its jobs are done, and
its finalizer releases the pool, the cache, the store and the thread.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import os
import pickle
import queue as stdlib_queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal, TypeVar

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.errors import UnknownJobError
from statusbridge.jobs._batch_feed import CANCELLED_BY_BATCH, BatchFeed
from statusbridge.jobs._cancel import request_cancel
from statusbridge.jobs._context import (
    FAILURE_LOG_SECONDS,
    WRITE_ERRORS,
    FailureLog,
    JobContext,
    register,
    running_context,
    signal_cancel,
)
from statusbridge.jobs._liveness import (
    LocalClock,
    Sightings,
    is_owner_alive,
    local_pid,
    this_process,
)
from statusbridge.jobs._options import check_queue_options
from statusbridge.jobs._pool import BrokenExecutor, WorkerPool, describe_exit
from statusbridge.jobs._retention import FinishOrder, retention_lag
from statusbridge.jobs._runner import OutcomeNotWritten, RunSpec, StartNotWritten, run_job
from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.record._frozen import freeze
from statusbridge.record._model import FIELD_NAMES, utc_now
from statusbridge.store import StatusStore
from statusbridge.store._store import merged

__all__ = ["BatchQueue", "MaintenanceReport"]

logger = logging.getLogger(__name__)

# A job that a dead pool never started runs again on the new pool, at most this
# many times in all (a job whose mere unpickling kills its worker must not loop).
MAX_ATTEMPTS = 3

_id_prefix: tuple[int, str] | None = None
_id_counter = itertools.count()


def _new_job_id() -> str:
    """``job-<random per process>-<counter>``: one os.urandom per process, not per job."""
    global _id_prefix  # noqa: PLW0603 - per-process memo, renewed after fork
    if _id_prefix is None or _id_prefix[0] != os.getpid():
        _id_prefix = (os.getpid(), uuid.uuid4().hex[:12])
    return f"job-{_id_prefix[1]}-{next(_id_counter)}"


# How long the supervisor keeps looking for the cache to show a finished job
# before leaving its retention to the next maintenance pass.
UNSEEN_PATIENCE = 5.0
RETENTION_RETRY = 0.05

# Longest a wait() sleeps between looks at its jobs.
WAIT_SLICE = 0.1

# How many ids of records removed by retention a queue remembers, so that
# ``wait()`` on a job that finished and was removed is not "unknown".
REMEMBER_REMOVED = 10_000

# How soon a record whose first write failed (a full disk) is tried again.
WRITE_RETRY = 0.5

# A change the supervisor could not write (a job's outcome, a failure it
# recorded) is tried again after WRITE_RETRY, doubling up to this; shutdown
# keeps trying for SHUTDOWN_WRITE_TRIES seconds before it gives one up (logged).
WRITE_RETRY_MAX = 5.0
SHUTDOWN_WRITE_TRIES = 10.0

# A job whose start could not be written is started again after the same delays,
# at most this many times in all (about a minute), then it fails saying why.
START_TRIES = 14

Change = Callable[[BatchJob | None], dict[str, Any] | None]

# How many deferred PENDING records the supervisor writes per hold of ``_writing``
# (a worker whose job is among them waits for the group).
WRITE_GROUP = 64

CANCELLED_BEFORE_START: dict[str, Any] = {
    "status": BatchStatus.CANCELLED,
    "cancel_requested": True,
    "message": "cancelled before it started",
}

# Queues with unfinished jobs stay alive even if the application dropped them
# (a Streamlit rerun does), so their jobs still get final records and retention.
_busy: set[BatchQueue] = set()
_busy_lock = threading.Lock()


@dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain()`` pass did."""

    died: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass
class _Submission:
    spec: RunSpec
    future: Future[Any]
    executor: Executor
    attempts: int = 1


@dataclass(frozen=True)
class DeferredRecord:
    """A pending job's record held in memory until it is written (or its worker claims it)."""

    since: float  # when submitted (monotonic): written ``record_delay`` after
    fields: dict[str, Any]


@dataclass(frozen=True)
class RetryEntry:
    """A change to a job's record whose write failed: tried again at ``due`` (monotonic)."""

    due: float
    delay: float  # the wait before this try; doubled after another failure
    change: Change


@dataclass(frozen=True)
class Restart:
    """A job whose RUNNING write failed: submitted again at ``due`` (monotonic)."""

    due: float
    sub: _Submission


_STOP = object()  # posted to the supervisor: release everything once idle
_WAKE = object()  # posted to the supervisor: a job waits in memory (see _write_overdue)
_DRAIN = object()  # posted to the supervisor: stop after what was posted before
_FEED_DONE = object()  # posted to the supervisor: a batch feed ended (the queue may be idle)
_NOT_TO_RUN = object()  # BatchQueue._claim_from_memory: the job ended before it started


def _post_done(events: stdlib_queue.SimpleQueue[Any], job_id: str, future: Future[Any]) -> None:
    # Runs inside the pool, possibly under its internal lock: no locks, no I/O.
    events.put((job_id, future))


def _claim(queue_ref: weakref.ref[BatchQueue], ctx: JobContext) -> tuple[Any] | None:
    queue = queue_ref()
    return None if queue is None else queue._claim(ctx)


T = TypeVar("T")
RetentionHook = Callable[[Snapshot], Iterable[str]]


def _identity(value: T) -> T:
    return value


def _weak(hook: T) -> Callable[[], T | None]:
    """A weak reference to a bound method; a plain function is held strongly."""
    if inspect.ismethod(hook):
        return weakref.WeakMethod(hook)
    return partial(_identity, hook)


class BatchQueue:
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
        self.max_completed_jobs = max_completed_jobs
        self.progress_interval = progress_interval
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = (
            heartbeat_timeout
            if heartbeat_timeout is not None
            else max(60.0, 6 * heartbeat_interval)
        )
        self.retention_hours = retention_hours
        # A pending job whose submitter runs on another machine (or ran before a
        # reboot) cannot be asked whether it is alive: it is abandoned after this.
        self.pending_timeout = pending_timeout
        # How long a thread job's state may live in memory only (0: every state
        # is written when it happens). See "Deferred records" above.
        self.record_delay = record_delay
        self._clock = clock
        self._pool = WorkerPool(executor, max_concurrent)
        self.store = StatusStore(status_dir, clock=clock)
        self._folder = self.store.location
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else StatusCache(status_dir)
        local = LocalClock(clock)  # ages as this process saw them: never a writer's clock
        self._finish_order = finish_order = FinishOrder(local)
        self._sightings = sightings = Sightings(local)

        def observe(snap: Snapshot, changed: frozenset[str]) -> None:
            finish_order(snap, changed)
            sightings(snap, changed)

        self._unsubscribe = self.cache.subscribe(observe)
        self._finish_order.seed(self.cache.snapshot())
        self._sightings.seed(self.cache.snapshot())

        self._lock = threading.Lock()  # guards the dicts below; never held around the pool
        self._subs: dict[str, _Submission] = {}
        self._submitted: dict[str, BatchJob] = {}  # read-your-writes until the cache catches up
        self._absent_once: set[str] = set()
        self._done_unseen: dict[str, float] = {}  # done here, not yet finished in the cache
        self._removed: dict[str, None] = {}  # recently removed by retention, oldest first
        # Pending jobs with no record yet: (when submitted, monotonic; the record's
        # fields), oldest first. Popped by whoever writes or claims one; a writer
        # holds ``_writing`` from the pop until the record is stored, so a worker
        # that finds its job gone waits for that write before reading the record.
        self._unwritten: dict[str, DeferredRecord] = {}
        self._writing = threading.Lock()
        self._unwritten_failures = FailureLog()  # their writes' failures, logged rate-limited
        # Changes to written records whose write failed, by job id: (when next due,
        # the delay after that, the change). Supervisor only; ``_submitted`` shows
        # them meanwhile, so ``get_job_status`` and ``wait`` are not held back.
        self._retries: dict[str, RetryEntry] = {}
        # Jobs to start again (their RUNNING write failed), by id: (when, submission).
        self._restarts: dict[str, Restart] = {}
        self._retention_hooks: list[Callable[[], RetentionHook | None]] = []
        self._idle_hooks: list[Callable[[], Callable[[], None] | None]] = []
        self._feeds: list[BatchFeed] = []  # started batches whose jobs are still being fed
        self._closed = False
        self._draining = False  # a shutdown(wait=True) is under way
        self._cancel_pending = False  # set by shutdown(cancel_pending=True)
        self._events: stdlib_queue.SimpleQueue[Any] = stdlib_queue.SimpleQueue()
        self._stopped = threading.Event()

        self.maintain()
        self._supervisor = threading.Thread(
            target=_supervise,
            args=(weakref.ref(self), self._events, self._stopped, maintenance_interval),
            name="statusbridge-queue",
            daemon=True,
        )
        self._supervisor.start()
        owned = _Owned(
            self._pool,
            self.cache if self._owns_cache else None,
            self._unsubscribe,
            self.store,
            self._events,
            self._stopped,
            self._supervisor,
        )
        self._release = weakref.finalize(self, owned.release)

    # -- submitting -----------------------------------------------------------
    def check_submittable(self, func: Callable[[Any], Any]) -> None:
        """Raise now what ``submit(func, ...)`` would raise about ``func`` or this queue."""
        if self._closed:
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
        job_id = validate_job_id(job_id) if job_id is not None else _new_job_id()
        if batch_id is not None:
            validate_job_id(batch_id)
        freeze(params, _path="params")
        me = this_process()
        now = self._clock()

        def create(current: BatchJob | None) -> dict[str, Any]:
            if current is not None and not current.is_finished:
                raise ValueError(f"job {job_id!r} already exists and is {current.status.value}")
            return {
                "status": BatchStatus.PENDING,
                "params": params,
                "batch_id": batch_id,
                "result": None,
                "error_message": None,
                "progress": None,
                "message": "",
                "created_at": now,
                "started_at": None,
                "completed_at": None,
                **me.fields(),
                "cancel_requested": False,
                "heartbeat_at": None,
            }

        # Only a job no other process can name may wait in memory: a generated id
        # is new to all, while a given id or a batch id is known elsewhere (batch
        # definitions, ``cancel --batch``), so those records are written now.
        deferred = (
            not given_id and batch_id is None and not self._pool.pickles and self.record_delay > 0
        )
        if deferred:
            fields = create(None)
            job = BatchJob(id=job_id, seq=1, updated_at=now, **fields)
        else:
            if given_id:
                with self._lock:
                    kept = self._retries.get(job_id)
                if kept is not None:  # an earlier run's outcome, shown ended: written first
                    self._write_kept(job_id, kept.delay, kept.change)
                existing = self.store.read(job_id)
                if existing is not None and existing.is_finished:
                    self.store.delete_if_unchanged([existing])  # a new run starts a new record
            written = self.store.modify(job_id, create)
            assert written is not None
            job = written
        spec = RunSpec(
            self._folder,
            job_id,
            func,
            progress_interval=self.progress_interval,
            heartbeat_interval=self.heartbeat_interval,
            store=self.store,
            claim=partial(_claim, weakref.ref(self)) if deferred else None,
        )
        with self._lock:
            self._submitted[job_id] = job
            # A write kept for an earlier run of this id: that run's record is gone.
            self._retries.pop(job_id, None)
            if deferred:
                first = not self._unwritten
                self._unwritten[job_id] = DeferredRecord(time.monotonic(), fields)
                if first:
                    self._events.put(_WAKE)  # the supervisor writes it if it still waits
        try:
            self._start(spec, attempts=1)
        except Exception as exc:
            why = f"could not submit: {type(exc).__name__}: {exc}"
            # A job still in memory gets its record now, failed: written later
            # as PENDING, it would wait for a worker that never comes.
            if not self._write_pending_now(job_id, status=BatchStatus.FAILED, error_message=why):
                self._mark_if_unfinished(job_id, BatchStatus.FAILED, why)
            raise
        return job_id

    def submit_batch(
        self,
        func: Callable[[Any], Any],
        jobs: Sequence[tuple[str, Any]],
        *,
        batch_id: str,
        stop: Callable[[], bool],
    ) -> None:
        """Queue ``func(params)`` for every ``(job_id, params)`` of a batch; returns at once.

        The jobs' PENDING records are written and the jobs submitted in the
        background, in order (see ``statusbridge.jobs._batch_feed``); a job that
        already has a record is skipped. ``stop()`` says whether the batch was
        cancelled: asked after each chunk's records are written, before they run.
        ``wait()`` and ``running`` count the jobs not fed yet.
        """
        self.check_submittable(func)
        validate_job_id(batch_id)
        self._pool.note_import_path()  # workers may be spawned after the caller's path changed
        feed = BatchFeed(batch_id, func, jobs, stop)
        with self._lock:
            self._feeds.append(feed)
            with _busy_lock:
                _busy.add(self)
        threading.Thread(
            target=feed.run, args=(self,), name="statusbridge-batch-feed", daemon=True
        ).start()

    def stop_feed(self, batch_id: str) -> set[str]:
        """The batch was cancelled here: its feed records the jobs not fed yet CANCELLED.

        Returns the ids of its jobs not fed yet (none of them will start).
        """
        with self._lock:
            feeds = [f for f in self._feeds if f.batch_id == batch_id]
        unfed: set[str] = set()
        for feed in feeds:
            feed.cancelled = True
            unfed |= feed.unsubmitted.copy()  # one C call: safe while the feed thread removes
        return unfed

    def _feeding(self, job_id: str) -> BatchFeed | None:
        """The feed that has not submitted ``job_id`` yet, if any."""
        with self._lock:
            feeds = list(self._feeds)
        return next((f for f in feeds if job_id in f.unsubmitted), None)

    def _note_recorded(self, jobs: Iterable[BatchJob]) -> None:
        """Records the batch feed wrote: shown by ``get_job_status`` until the cache has them."""
        with self._lock:
            for job in jobs:
                self._submitted[job.id] = job

    def _start_recorded(self, func: Callable[[Any], Any], job: BatchJob) -> None:
        """Start a job whose PENDING record the batch feed wrote (on the feed's thread)."""
        spec = RunSpec(
            self._folder,
            job.id,
            func,
            progress_interval=self.progress_interval,
            heartbeat_interval=self.heartbeat_interval,
            store=self.store,
            # In this process its RUNNING write can wait, as for a job in memory: one that
            # ends within ``record_delay`` writes only its end.
            defer_start=0.0 if self._pool.pickles else self.record_delay,
        )
        try:
            self._start(spec, attempts=1)
        except Exception as exc:  # noqa: BLE001 - recorded in the job
            if self._cancel_pending:
                self._mark_if_unfinished(job.id, BatchStatus.CANCELLED, CANCELLED_BY_BATCH)
            else:
                why = f"could not submit: {type(exc).__name__}: {exc}"
                self._mark_if_unfinished(job.id, BatchStatus.FAILED, why)
            self._settle_submitted(job.id)

    def _feed_ended(self, feed: BatchFeed) -> None:
        with self._lock:
            if feed in self._feeds:
                self._feeds.remove(feed)
        self._events.put(_FEED_DONE)

    def _after_feed(self) -> None:
        """A feed ended: if nothing else runs here, the queue is idle (as ``_forget`` says)."""
        with self._lock:
            idle = not self._subs and not self._feeds
            hooks = [ref() for ref in self._idle_hooks] if idle else []
            if idle:
                with _busy_lock:
                    _busy.discard(self)
        for hook in hooks:
            if hook is not None:
                hook()

    def _join_feeds(self, deadline: float | None) -> bool:
        """Wait for the batch feeds under way; False if ``deadline`` (monotonic) came first."""
        while True:
            with self._lock:
                feed = self._feeds[0] if self._feeds else None
            if feed is None:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            feed.finished.wait(remaining)
            with self._lock:
                if feed.finished.is_set() and feed in self._feeds:
                    self._feeds.remove(feed)

    def _start(self, spec: RunSpec, *, attempts: int) -> None:
        # Holding our lock around the pool's submit is safe because no done-callback
        # ever takes it (they only post to ``_events``); it makes "registered as
        # busy" and "has a submission" one step for ``_forget``.
        with self._lock:
            with _busy_lock:
                _busy.add(self)
            try:
                future, executor = self._pool.submit(run_job, spec)
            except BaseException:
                if not self._subs:
                    with _busy_lock:
                        _busy.discard(self)
                raise
            self._subs[spec.job_id] = _Submission(spec, future, executor, attempts)
        # Added after the bookkeeping: a future already done calls back at once.
        future.add_done_callback(partial(_post_done, self._events, spec.job_id))

    def _claim(self, ctx: JobContext) -> tuple[Any] | None:
        """A worker takes its job from memory if no record of it was written: (params,)."""
        while True:
            claimed = self._claim_from_memory(ctx)
            if claimed is _NOT_TO_RUN:
                return None
            if isinstance(claimed, tuple):
                return claimed
            # A write of its PENDING record may have been under way: it has landed
            # now, or it failed and put the job back in memory (claim it then).
            with self._writing, self._lock:
                if ctx.job_id not in self._unwritten:
                    return None

    def _claim_from_memory(self, ctx: JobContext) -> tuple[Any] | object | None:
        with self._lock:
            entry = self._unwritten.get(ctx.job_id)
            if entry is not None and entry.fields["status"] is not BatchStatus.PENDING:
                return _NOT_TO_RUN  # ended in memory (its write failed): the retry writes it
            if entry is not None:
                del self._unwritten[ctx.job_id]
                now = self._clock()
                record = {
                    **entry.fields,
                    "status": BatchStatus.RUNNING,
                    "started_at": now,
                    "heartbeat_at": now,
                    **this_process().fields(),
                }
                # Due ``record_delay`` after submit, not after start: others see
                # every job within that delay, however long it waited in memory.
                due = entry.since + self.record_delay - time.monotonic()
                ctx.start_unwritten(record, write_after=max(0.0, due))
                register(ctx)  # before the lock is let go: cancel() finds it from now on
                local = self._submitted.get(ctx.job_id)
                if local is not None:
                    self._submitted[ctx.job_id] = local.replace(
                        status=BatchStatus.RUNNING, started_at=now, heartbeat_at=now
                    )
                return (record["params"],)
        return None

    def _write_overdue(self) -> float | None:
        """Write the PENDING records of jobs that waited ``record_delay`` in memory.

        Returns when (monotonic) the next one is due, None if none waits.
        """
        while True:
            with self._writing:
                with self._lock:
                    due_before = time.monotonic() - self.record_delay
                    overdue: list[tuple[str, DeferredRecord]] = []
                    for job_id, entry in self._unwritten.items():
                        if entry.since > due_before or len(overdue) >= WRITE_GROUP:
                            break
                        overdue.append((job_id, entry))
                    for job_id, _ in overdue:
                        del self._unwritten[job_id]
                    if not overdue:
                        oldest = next(iter(self._unwritten.values()), None)
                        return None if oldest is None else oldest.since + self.record_delay
                for job_id, entry in overdue:
                    self._write_unwritten(job_id, entry, {})

    def _write_remaining(self) -> None:
        """Before the store is let go: a last try at what failed writes left in memory."""
        with self._writing:
            with self._lock:
                remaining, self._unwritten = self._unwritten, {}
            for job_id, entry in remaining.items():
                self._write_unwritten(job_id, entry, {})
        self._restart_due(force=True)  # closed: each fails, saying why
        # A short outage (a server restarting) should not cost the outcomes: keep
        # trying a while, then say what is lost.
        deadline = time.monotonic() + SHUTDOWN_WRITE_TRIES
        while self._retries and time.monotonic() < deadline:
            if self._retry_writes(force=True) is not None:
                time.sleep(WRITE_RETRY)
        with self._lock:
            lost, self._retries = self._retries, {}
        for job_id in lost:
            logger.error("job %s: its final record could not be written; it is lost", job_id)

    def _record_later(self, job_id: str, change: Change) -> None:
        """Keep a change whose write failed: shown at once, written by a retry."""
        now = self._clock()
        with self._lock:
            local = self._submitted.get(job_id)
            cached = self.cache.get(job_id)
            if local is None or _caught_up(cached, local):
                local = cached
            if local is not None:  # never applied to another run of this job id
                change = partial(_for_run, change, local.created_at)
            fields = change(local)
            if fields is not None:
                self._submitted[job_id] = merged(job_id, local, fields, now)
            elif local is not None:
                self._submitted[job_id] = local  # shown until the retry (get_job_status)
            self._retries[job_id] = RetryEntry(time.monotonic() + WRITE_RETRY, WRITE_RETRY, change)
        self._events.put(_WAKE)

    def _start_again_later(self, sub: _Submission) -> bool:
        if self._closed or sub.attempts >= START_TRIES:
            return False
        delay = min(WRITE_RETRY * 2 ** (sub.attempts - 1), WRITE_RETRY_MAX)
        with self._lock:
            self._restarts[sub.spec.job_id] = Restart(time.monotonic() + delay, sub)
        self._events.put(_WAKE)
        return True

    def _restart_due(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [(k, v.sub) for k, v in self._restarts.items() if force or v.due <= now]
            for job_id, _ in due:
                del self._restarts[job_id]
        for job_id, sub in due:
            status = BatchStatus.FAILED
            why = "could not be started: its record could not be written"
            if self._cancel_pending:  # shutdown(cancel_pending=True): it is pending
                status, why = BatchStatus.CANCELLED, "cancelled before it started"
            elif not self._closed:
                try:
                    self._start(sub.spec, attempts=sub.attempts + 1)
                except Exception as exc:  # noqa: BLE001 - recorded in the job, and logged
                    logger.warning("job %s: could not submit it again: %s", job_id, exc)
                    why = f"could not be submitted again: {type(exc).__name__}: {exc}"
                else:
                    continue
            self._mark_if_unfinished(job_id, status, why)
            self._forget(job_id, sub)

    def _retry_writes(self, *, force: bool = False) -> float | None:
        """Write the changes that are due again and start again the jobs due;
        returns when the next is due, None if none."""
        self._restart_due(force=force)
        now = time.monotonic()
        with self._lock:
            due_now = [(k, v) for k, v in self._retries.items() if force or v.due <= now]
        for job_id, entry in due_now:
            self._write_kept(job_id, entry.delay, entry.change)
        with self._lock:
            return min(
                itertools.chain(
                    (entry.due for entry in self._retries.values()),
                    (restart.due for restart in self._restarts.values()),
                ),
                default=None,
            )

    def _write_kept(self, job_id: str, delay: float, change: Change) -> None:
        """One try at a change kept by ``_record_later``; kept longer if it fails again."""
        try:
            job = self.store.modify(job_id, change)
        except WRITE_ERRORS as exc:
            logger.debug("job %s: writing its record failed again: %s", job_id, exc)
            longer = min(delay * 2, WRITE_RETRY_MAX)
            with self._lock:
                if self._kept_change(job_id) is change:
                    self._retries[job_id] = RetryEntry(time.monotonic() + longer, longer, change)
            return
        except Exception:
            logger.exception("job %s: cannot write its record; giving up", job_id)
            job = None
        else:
            logger.info("job %s: its record is written now", job_id)
        with self._lock:
            if self._kept_change(job_id) is change:
                del self._retries[job_id]
            if job is not None and job_id in self._submitted:
                self._submitted[job_id] = job
        self._settle_submitted(job_id, job)

    def _kept_change(self, job_id: str) -> Change | None:
        entry = self._retries.get(job_id)
        return None if entry is None else entry.change

    def _write_pending_now(self, job_id: str, **change: Any) -> bool:
        """Write the record of a job still pending in memory only, with ``change``.

        True if the job was in memory: its record is written, or, if the write
        failed, ``change`` stays in memory and is written by a retry.
        """
        with self._writing:
            with self._lock:
                entry = self._unwritten.pop(job_id, None)
            if entry is None:
                return False
            self._write_unwritten(job_id, entry, change)
            return True

    def _write_unwritten(self, job_id: str, entry: DeferredRecord, change: dict[str, Any]) -> bool:
        # Under ``_writing``, with the entry popped: no worker can claim it now.
        fields = {**entry.fields, **change}
        try:
            job = self.store.modify(job_id, lambda current: fields if current is None else None)
        except Exception as exc:
            unlogged = self._unwritten_failures.failed()
            if unlogged == 0:
                logger.exception(
                    "job %s: could not write its record; will try again "
                    "(repeats logged at most every %.0f s)",
                    job_id,
                    FAILURE_LOG_SECONDS,
                )
            elif unlogged is not None:
                logger.error(  # noqa: TRY400 - its traceback was logged the first time
                    "records of jobs in memory: writes still failing (%d times since "
                    "last logged); last: job %s: %s",
                    unlogged,
                    job_id,
                    exc,
                )
            retry_at = time.monotonic() + min(self.record_delay, WRITE_RETRY)
            with self._lock:
                # Kept with its change (a cancel must hold), first in line: due before
                # the others (O(jobs in memory), on a failure only).
                self._unwritten = {job_id: DeferredRecord(retry_at - self.record_delay, fields)} | {
                    k: v for k, v in self._unwritten.items() if k != job_id
                }
                local = self._submitted.get(job_id)
                if change and local is not None:
                    self._submitted[job_id] = local.replace(**change)
            self._events.put(_WAKE)  # the supervisor retries (it may not be the writer)
            return False
        if self._unwritten_failures.succeeded():
            logger.info("records of jobs in memory are written again")
        if job is not None:
            with self._lock:
                if job_id in self._submitted:
                    self._submitted[job_id] = job
        return job is not None

    def add_retention_hook(self, hook: RetentionHook) -> None:
        """``hook(snapshot)`` returns batch ids whose records retention must keep for now.

        Held weakly (a bound method of an object that owns this queue is fine).
        """
        with self._lock:
            self._retention_hooks.append(_weak(hook))

    def add_idle_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs (on the supervisor thread) each time the last job submitted
        here is done. Held weakly, like retention hooks."""
        with self._lock:
            self._idle_hooks.append(_weak(hook))

    # -- the supervisor's work (one thread) ------------------------------------
    def _handle_done(self, job_id: str, future: Future[Any]) -> None:
        with self._lock:
            sub = self._subs.get(job_id)
        if sub is None or sub.future is not future:
            return  # a stale future (the job was re-submitted since)
        exc = None if future.cancelled() else future.exception()
        if future.cancelled():
            self._write_pending_now(
                job_id, status=BatchStatus.CANCELLED, message="cancelled before it started"
            )
            self._mark_if_unfinished(job_id, BatchStatus.CANCELLED, "cancelled before it started")
        elif isinstance(exc, BrokenExecutor):
            if self._after_broken_pool(sub):
                return  # runs again on the new pool
        elif isinstance(exc, StartNotWritten) and self._start_again_later(sub):
            # The first try says why; the next ones (up to START_TRIES) only add noise.
            log = logger.warning if sub.attempts == 1 else logger.debug
            log("%s; starting it again later (try %d)", exc, sub.attempts)
            return  # still busy here: ``_retry_writes`` submits it again
        elif isinstance(exc, OutcomeNotWritten):
            logger.warning("%s; the queue writes it when it can", exc)
            self._record_later(job_id, partial(_outcome, exc.fields))
        elif exc is not None:
            # run_job itself could not run: an unpicklable function or result, ...
            logger.error("job %s: worker failed: %s", job_id, exc)
            self._mark_if_unfinished(
                job_id,
                BatchStatus.FAILED,
                f"worker failed: {type(exc).__name__}: {exc}",
                create=self._memory_record(sub),
            )
        else:
            # What the worker wrote last: a finished record spares reading it back.
            last = future.result()
            if isinstance(last, BatchJob) and last.is_finished:
                self._forget(job_id, sub, last)
                return
        self._forget(job_id, sub)

    def _after_broken_pool(self, sub: _Submission) -> bool:
        """A worker of ``sub``'s pool died. Re-submit the job if it never started (True)."""
        replaced = self._pool.replace(sub.executor)
        codes = self._pool.exit_codes(sub.executor) if self._pool.owned else {}
        job_id = sub.spec.job_id
        try:
            current = self.store.read(job_id)
        except Exception:
            logger.exception("job %s: cannot read its record after its pool broke", job_id)
            current = None
        if current is None or current.is_finished:
            return False
        if current.status is BatchStatus.PENDING:
            retry = self._pool.owned and not self._closed and not current.cancel_requested
            if retry and sub.attempts < MAX_ATTEMPTS:
                try:
                    self._start(sub.spec, attempts=sub.attempts + 1)
                except Exception as exc:  # noqa: BLE001 - recorded in the job, and logged
                    logger.warning("job %s: could not re-submit: %s", job_id, exc)
                else:
                    return True
            why = (
                f"its worker pool broke {sub.attempts} time(s) before it started"
                if retry
                else "its worker pool broke before it started"
            )
            self._mark_if_unfinished(job_id, BatchStatus.FAILED, why)
            return False
        # RUNNING in a process of the dead pool.
        pid = local_pid(current)
        if pid in codes:
            why = f"worker process died ({describe_exit(codes[pid])})"
        elif pid is not None and is_owner_alive(current, now=self._clock(), heartbeat_timeout=0):
            # Not a worker of that pool (or not yet gone): the heartbeat check decides later.
            return False
        else:
            why = "worker process died (exit code unknown)"
        if not replaced:
            why += "; its pool cannot be replaced"
        self._mark_if_unfinished(job_id, BatchStatus.FAILED, why, only_owner=current.owner)
        return False

    def _forget(self, job_id: str, sub: _Submission, final: BatchJob | None = None) -> None:
        with self._lock:
            if self._subs.get(job_id) is sub:
                del self._subs[job_id]
            idle = not self._subs and not self._feeds
            hooks = [ref() for ref in self._idle_hooks] if idle else []
            self._done_unseen[job_id] = time.monotonic()
            if idle:
                with _busy_lock:
                    _busy.discard(self)
        self._settle_submitted(job_id, final)
        for hook in hooks:
            if hook is not None:
                hook()

    def _memory_record(self, sub: _Submission) -> dict[str, Any] | None:
        """The fields of a job run from memory that may have no record yet (else None)."""
        if sub.spec.claim is None:
            return None
        with self._lock:
            local = self._submitted.get(sub.spec.job_id)
        if local is None or local.is_finished:
            return None
        fields = {name: getattr(local, name) for name in FIELD_NAMES}
        fields["progress"] = local.reported_progress
        for name in ("id", "seq", "updated_at"):
            del fields[name]
        return fields

    def _mark_if_unfinished(
        self,
        job_id: str,
        status: BatchStatus,
        message: str,
        *,
        only_owner: str | None = None,
        create: dict[str, Any] | None = None,
    ) -> None:
        """Give an unfinished record ``status``; ``create``: the record to write if none exists."""

        def change(current: BatchJob | None) -> dict[str, Any] | None:
            if current is None and create is None:
                return None
            if current is not None and current.is_finished:
                return None
            if current is not None and only_owner is not None and current.owner != only_owner:
                return None
            if status is BatchStatus.FAILED:
                return {**(create or {}), "status": status, "error_message": message}
            return {**(create or {}), "status": status, "message": message}

        try:
            self.store.modify(job_id, change)
        except WRITE_ERRORS:
            logger.warning(
                "job %s: could not record %s; will try again", job_id, status.value, exc_info=True
            )
            self._record_later(job_id, change)
        except Exception:
            logger.exception("job %s: could not record %s", job_id, status.value)

    # -- control -------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Cancel a job: a pending one never starts, a running one is asked to stop.

        Works for jobs of any process on this folder (the request travels in the
        file). Returns False if the job is unknown or already finished.
        """

        with self._lock:
            kept, local = job_id in self._retries, self._submitted.get(job_id)
        if kept and local is not None and local.is_finished:
            return False  # ended; only its record is still to be written
        if self._write_pending_now(job_id, **CANCELLED_BEFORE_START):
            with self._lock:
                sub = self._subs.get(job_id)
            if sub is not None:
                sub.future.cancel()
            return True
        feed = self._feeding(job_id)
        if feed is not None and self._cancel_unfed(feed, job_id):
            return True
        ctx = running_context(job_id)
        if ctx is not None and not ctx.written:
            ctx.flush()  # running in memory only: its record first, then the request in it
        if not request_cancel(self.store, job_id):
            return False
        with self._lock:
            sub = self._subs.get(job_id)
        if sub is not None and (self._pool.owned or not self._seen_running(job_id)):
            # An executor given to us (Dask's) may report a remote running task as not
            # started and "cancel" it while it runs on: the job is asked through its record.
            sub.future.cancel()
        signal_cancel(job_id)
        return True

    def _cancel_unfed(self, feed: BatchFeed, job_id: str) -> bool:
        """Cancel a batch job not fed yet: its record is created CANCELLED, unless one exists.

        False if a record exists (the feed wrote it meanwhile): cancel that one.
        """
        if feed.cancelled:
            return True  # its feed records it CANCELLED
        fields = feed.cancelled_record(job_id)
        written = self.store.modify(job_id, lambda current: fields if current is None else None)
        return written is not None

    def _seen_running(self, job_id: str) -> bool:
        job = self.get_job_status(job_id)
        return job is not None and job.status is BatchStatus.RUNNING

    # -- reading (from the cache only) ----------------------------------------
    def get_job_status(self, job_id: str) -> BatchJob | None:
        """The job's latest known record, from memory (never from disk)."""
        cached = self.cache.get(job_id)
        local = self._submitted.get(job_id)
        if local is None:
            return cached
        if job_id in self._retries:
            # Ours is newer than any record on disk until the retry writes it: the
            # disk's seq may equal ours (ours was built on a record the cache had
            # not caught up with), so seq alone cannot tell.
            return local
        # No pop here when the cache has caught up: without the lock it could drop a
        # newer record the supervisor stored meanwhile, and the UI path takes no lock.
        # The supervisor prunes caught-up entries (``_prune_submitted``).
        return cached if _caught_up(cached, local) else local

    def unseen_records(self, snapshot: Snapshot) -> list[BatchJob]:
        """Records written here that ``snapshot`` does not show yet (read-your-writes).

        O(jobs in flight here): what ``get_job_status`` would answer instead of
        the snapshot, for summaries that start from the snapshot's counts.
        """
        with self._lock:
            local = list(self._submitted.items())
            retrying = set(self._retries)
        return [
            job
            for job_id, job in local
            if job_id in retrying or not _caught_up(snapshot.get(job_id), job)
        ]

    def snapshot(self) -> Snapshot:
        """The cache's current snapshot of every job in the folder."""
        return self.cache.snapshot()

    @property
    def running(self) -> int:
        """Jobs submitted here that are not done yet (pending or running)."""
        with self._lock:
            return len(self._subs) + sum(feed.remaining for feed in self._feeds)

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        """Block until these jobs (default: all submitted here and not done) are finished.

        Returns False on timeout; raises UnknownJobError for an id that names no
        job. Waits on cache changes, not by polling the disk.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if job_ids is None and not self._join_feeds(deadline):
            return False
        with self._lock:
            remaining_ids = list(job_ids) if job_ids is not None else list(self._subs)
        unknown = [
            i
            for i in remaining_ids
            if self.get_job_status(i) is None
            and i not in self._removed
            and self._feeding(i) is None
        ]
        if unknown:
            raise UnknownJobError(f"no such job: {', '.join(map(repr, unknown[:5]))}")
        in_line = collections.deque(remaining_ids)
        while True:
            snap = self.cache.snapshot()
            # Only the first unfinished job is looked at after each change (a finished
            # one stays finished), so waiting on many jobs costs O(jobs + changes).
            # A job that vanished meanwhile finished first (retention removed it).
            while in_line and ((job := self.get_job_status(in_line[0])) is None or job.is_finished):
                if job is None and self._feeding(in_line[0]) is not None:
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
        now = now or self._clock()
        snap = self.cache.snapshot()
        died: list[str] = []
        abandoned: list[str] = []
        with self._lock:
            in_flight = set(self._subs)
        for job in snap.active().values():  # only unfinished jobs can have died
            if job.id in in_flight and local_pid(job) is not None:
                # Run by this queue's own pool on this host: when its worker dies, its
                # future says so, with the exit code; judging it by its pid here raced
                # that (a loaded machine showed "process ... is gone" instead).
                continue
            if job.status is BatchStatus.RUNNING:
                alive = is_owner_alive(
                    job,
                    now=now,
                    heartbeat_timeout=self.heartbeat_timeout,
                    sightings=self._sightings,
                )
                if not alive and self._fail_dead(job, now):
                    died.append(job.id)
            elif job.status is BatchStatus.PENDING:
                # Pending jobs have no heartbeat: judged by their submitter's pid
                # where it runs here, else by how long they have been waiting.
                alive = is_owner_alive(
                    job, now=now, heartbeat_timeout=self.pending_timeout, sightings=self._sightings
                )
                if not alive and self._fail_dead(job, now):
                    abandoned.append(job.id)
        removed = self._apply_retention(snap, now=now, max_age_hours=self.retention_hours)
        self._prune_submitted(snap)
        if died or abandoned:
            logger.warning(
                "statusbridge: %d job(s) whose worker died and %d abandoned pending job(s) "
                "marked FAILED",
                len(died),
                len(abandoned),
            )
        return MaintenanceReport(tuple(died), tuple(abandoned), tuple(removed))

    def _apply_retention(
        self, snap: Snapshot, *, now: datetime, max_age_hours: float | None, lag: int = 0
    ) -> list[str]:
        """Remove what retention selects; the count-based pass waits for ``lag`` extra records."""
        finished = snap.summary().finished
        if finished <= self.max_completed_jobs + lag and max_age_hours is None:
            return []
        protected: set[str] = set()
        with self._lock:
            hooks = [ref() for ref in self._retention_hooks]
        for hook in hooks:
            if hook is not None:
                protected.update(hook(snap))
        # The oldest few beyond the limit, from the finish order (O(1) amortised per
        # finished job); with an age limit, one cheap pass over the finished jobs.
        doomed = self._finish_order.select(
            snap,
            max_completed=self.max_completed_jobs,
            max_age_hours=max_age_hours,
            now=now,
            protected=lambda job: (
                job.batch_id is not None
                and (job.batch_id in protected or not snap.summary(job.batch_id).is_done)
            ),
        )
        if not doomed:
            return []
        # Noted first: a reader may see a record gone before the call returns.
        self._note_removed(job.id for job in doomed)
        # The cache's file signatures spare the store reading each record back.
        removed = self.store.delete_if_unchanged(doomed, versions=self.cache.versions_of(doomed))
        with self._lock:
            for job_id in removed:
                if job_id not in self._subs:
                    self._submitted.pop(job_id, None)
        return removed

    def _prune_submitted(self, snap: Snapshot, job_ids: Iterable[str] | None = None) -> None:
        """Drop read-your-writes entries the cache has caught up with.

        An entry of a job that is done here but absent from the cache (removed, or
        replaced by a newer run) goes at the second full pass that finds it so:
        one pass alone may just be ahead of a slow (polling) cache.
        """
        full_pass = job_ids is None
        with self._lock:
            absent_before, absent_now = self._absent_once, set()
            for job_id in list(self._submitted) if job_ids is None else job_ids:
                local = self._submitted.get(job_id)
                if local is None or job_id in self._retries:
                    continue  # a retry's record stays until written (see get_job_status)
                if _caught_up(snap.get(job_id), local):
                    del self._submitted[job_id]
                elif full_pass and job_id not in self._subs and job_id not in self._unwritten:
                    if job_id in absent_before:
                        del self._submitted[job_id]
                    else:
                        absent_now.add(job_id)
            if full_pass:
                self._absent_once = absent_now

    def _settle_submitted(self, job_id: str, final: BatchJob | None = None) -> None:
        """A job is done here: its read-your-writes entry becomes its final record.

        Until the cache catches up, ``get_job_status`` must not keep answering
        with the PENDING record written at submit (a job whose record retention
        already removed would look pending forever). ``final``: the record its
        worker wrote last, else it is read.
        """
        with self._lock:
            local = self._submitted.get(job_id)
            if job_id in self._unwritten or job_id in self._retries:
                return  # its record is still to be written (a write failed): ours stays
        if local is None:
            return
        if final is None:
            try:
                final = self.store.read(job_id)
            except Exception:  # an invalid file: the cache reports it; forget ours
                logger.exception("job %s: cannot read its final record", job_id)
                final = None
        with self._lock:
            if self._submitted.get(job_id) is not local:
                return
            if final is None or final.created_at != local.created_at:
                del self._submitted[job_id]  # removed (or replaced by a new run) already
            else:
                self._submitted[job_id] = final
        self._prune_submitted(self.cache.snapshot(), [job_id])

    def _note_removed(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._removed[job_id] = None
            while len(self._removed) > REMEMBER_REMOVED:
                del self._removed[next(iter(self._removed))]

    def _fail_dead(self, seen: BatchJob, now: datetime) -> bool:
        def change(current: BatchJob | None) -> dict[str, Any] | None:
            # Judge again under the lock, on the record as it is now.
            if current is None or current.status is not seen.status:
                return None
            timeout = (
                self.heartbeat_timeout
                if seen.status is BatchStatus.RUNNING
                else self.pending_timeout
            )
            if current.owner != seen.owner or is_owner_alive(
                current, now=now, heartbeat_timeout=timeout, sightings=self._sightings
            ):
                return None
            if current.status is BatchStatus.RUNNING:
                why = f"worker died: process {current.owner} is gone"
                if local_pid(current) is None:
                    why = (
                        f"worker died: no heartbeat from {current.owner} "
                        f"for over {self.heartbeat_timeout:g}s"
                    )
            else:
                why = (
                    f"abandoned: the queue that accepted it ({current.owner}) is gone; "
                    "it never started"
                )
            return {"status": BatchStatus.FAILED, "error_message": why}

        return self.store.modify(seen.id, change) is not None

    def _after_job_done(self) -> bool:
        """Count-based retention right after jobs finish (age-based runs in ``maintain``).

        Returns True while some job done here is not yet finished in the cache:
        the supervisor then runs this again shortly, so the last jobs of a burst
        are trimmed too without waiting for the next maintenance pass.
        """
        snap = self.cache.snapshot()
        with self._lock:
            busy = bool(self._subs)
        # While jobs still run, old records go in groups; once idle, down to the limit.
        lag = retention_lag(self.max_completed_jobs) if busy else 0
        self._apply_retention(snap, now=self._clock(), max_age_hours=None, lag=lag)
        now = time.monotonic()
        with self._lock:
            for job_id, since in list(self._done_unseen.items()):
                job = snap.get(job_id)
                if job is None or job.is_finished or now - since > UNSEEN_PATIENCE:
                    del self._done_unseen[job_id]
            return bool(self._done_unseen)

    # -- life cycle ---------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop accepting jobs and release the pool, cache, store and thread.

        With ``wait``, first let running and queued jobs finish; without, return at
        once and release everything when they have. May be called again (a later
        ``wait=True`` then waits).
        """
        if self._draining and not wait and not cancel_pending:
            return  # a shutdown(wait=True) is under way (an idle hook calls this meanwhile)
        if wait:
            # Until it is done, the supervisor must not release the cache early: the
            # final rescan below shows how every job ended.
            self._draining = True
        if not cancel_pending and not self._closed:
            # Jobs waiting to be started again (their start could not be written)
            # are queued jobs: they go to the pool now, before it stops taking any.
            self._restart_due(force=True)
        self._closed = True
        self._cancel_pending = self._cancel_pending or cancel_pending
        if wait:
            # Batches being fed are queued jobs: fed to the pool (or, with
            # cancel_pending, recorded CANCELLED) before the pool stops.
            self._join_feeds(None)
        if cancel_pending:
            with self._lock:
                ids = list(self._subs)
            for job_id in ids:
                job = self.get_job_status(job_id)
                if job is not None and job.status is BatchStatus.PENDING:
                    try:
                        self.cancel(job_id)
                    except WRITE_ERRORS:
                        # Shutting down goes on: the pool drops the job, whose
                        # CANCELLED record is then kept and retried like any write.
                        logger.warning("job %s: its cancel could not be written", job_id)
        with self._lock:
            feeding = bool(self._feeds)
        if not feeding or cancel_pending:
            # (A batch still being fed keeps the pool; the supervisor releases it after.)
            self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)
        if not wait:
            self._events.put(_STOP)  # the supervisor releases once the jobs are done
            return
        # Every future is done and has posted its event: let the supervisor
        # record them all, then stop it.
        self._events.put(_DRAIN)
        if self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=30)
        if self._owns_cache and self._release.alive:
            # Catch up with the final records before the watch stops, so that
            # reads after shutdown show how every job ended.
            self.cache.rescan()
        self._release()

    def stop_now(self, timeout: float = 5.0) -> bool:
        """Shut down within about ``timeout`` seconds, for a program that is going away.

        Pending jobs end CANCELLED, running ones are asked to stop; worker processes whose
        jobs are still running after ``timeout`` are killed, and those jobs end FAILED as
        when a worker dies. Worker threads cannot be killed: a job on a thread that ignores
        its cancel keeps running. True if every job had ended by the time it returned.
        """
        with self._lock:
            running = list(self._subs)
        self.shutdown(wait=False, cancel_pending=True)
        for job_id in running:
            job = self.get_job_status(job_id)
            if job is not None and not job.status.is_finished:
                try:
                    self.cancel(job_id)
                except WRITE_ERRORS:
                    logger.warning("job %s: its cancel could not be written", job_id)
        ended = self.wait(running, timeout=timeout)
        if not ended:
            killed = self._pool.kill_workers()
            if killed:
                logger.warning(
                    "statusbridge: killed worker process(es) %s whose jobs ignored their cancel",
                    ", ".join(map(str, killed)),
                )
            ended = self.wait(running, timeout=timeout)
        # Idle workers exit only once the pool hands them their stop, on its own thread: a
        # process that ends right after this (a server re-raising SIGTERM) would otherwise
        # leave them running, each holding its own end of the pool's queue.
        self._pool.join_workers(timeout)
        return ended

    def close(self) -> None:
        """``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def __enter__(self) -> BatchQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"<BatchQueue {self._folder!r} running={len(self._subs)}>"


def _outcome(fields: dict[str, Any], current: BatchJob | None) -> dict[str, Any] | None:
    """A job's final write, retried: never over a record someone else finished, nor
    in place of a removed one (unless ``fields`` is a whole record: a job run from
    memory whose record was never written)."""
    if current is None:
        return fields if "created_at" in fields else None
    return None if current.is_finished else fields


def _for_run(
    change: Change, created_at: datetime | None, current: BatchJob | None
) -> dict[str, Any] | None:
    """``change``, unless ``current`` is another run of the job (created at another time)."""
    if current is not None and created_at is not None and current.created_at != created_at:
        return None
    return change(current)


def _caught_up(cached: BatchJob | None, local: BatchJob) -> bool:
    """Whether the cache's record is (at least) this run's record written here."""
    return cached is not None and cached.created_at == local.created_at and cached.seq >= local.seq


def _supervise(
    queue_ref: weakref.ref[BatchQueue],
    events: stdlib_queue.SimpleQueue[Any],
    stopped: threading.Event,
    interval: float,
) -> None:
    """The supervisor loop; holds the queue strongly only while handling something."""
    next_maintenance = time.monotonic() + interval
    retention_retry: float | None = None
    unwritten_due: float | None = None
    stopping = False
    while not stopped.is_set():
        deadline = min(
            next_maintenance,
            retention_retry or next_maintenance,
            unwritten_due or next_maintenance,
        )
        try:
            item = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except stdlib_queue.Empty:
            item = None
        if stopped.is_set():
            return
        queue = queue_ref()
        if queue is None:
            return  # collected: its finalizer released everything
        try:
            if item is _DRAIN:
                queue._write_remaining()
                return
            if item is _STOP:
                stopping = True
            elif item is _WAKE:
                unwritten_due = None  # look now
            elif item is _FEED_DONE:
                queue._after_feed()
            elif item is not None:
                queue._handle_done(*item)
            if item is _WAKE or (unwritten_due is not None and time.monotonic() >= unwritten_due):
                due_times = [queue._write_overdue(), queue._retry_writes()]
                unwritten_due = min((t for t in due_times if t is not None), default=None)
            done = item is not None and item is not _STOP and item is not _WAKE
            due = retention_retry is not None and time.monotonic() >= retention_retry
            if (done and events.empty()) or due:
                # After a burst of finished jobs: one retention pass.
                again = queue._after_job_done()
                retention_retry = time.monotonic() + RETENTION_RETRY if again else None
            if time.monotonic() >= next_maintenance:
                queue.maintain()
                next_maintenance = time.monotonic() + interval
            if stopping and not queue._subs and not queue._feeds:
                queue._write_remaining()
                queue._release()
                return
        except Exception:
            logger.exception("statusbridge queue supervisor: an error (will go on)")
        finally:
            del queue


@dataclass(frozen=True)
class _Owned:
    """What a queue owns; released through weakref.finalize, so it never refers to the queue."""

    pool: WorkerPool
    cache: StatusCache | None
    unsubscribe: Callable[[], None]
    store: StatusStore
    events: stdlib_queue.SimpleQueue[Any]
    stopped: threading.Event
    supervisor: threading.Thread

    def release(self) -> None:
        self.stopped.set()
        self.events.put(None)  # wake the supervisor so it sees ``stopped``
        self.pool.shutdown(wait=False)
        self.unsubscribe()
        if self.cache is not None:
            self.cache.close()
        self.store.close()
        if self.supervisor is not threading.current_thread() and self.supervisor.is_alive():
            self.supervisor.join(timeout=10)
