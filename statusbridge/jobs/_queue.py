"""BatchQueue: run functions in threads or processes, with their status in a StatusStore.

All status goes through the store (write side); all status reads come from the
cache (read side), so ``get_job_status`` never touches the disk.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from multiprocessing import get_context
from typing import Any, Literal

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.jobs._cancel import request_cancel
from statusbridge.jobs._context import signal_cancel
from statusbridge.jobs._liveness import HOST, is_owner_alive, this_process
from statusbridge.jobs._runner import RunSpec, run_job
from statusbridge.record import BatchJob, BatchStatus, freeze, utc_now, validate_job_id
from statusbridge.store import StatusStore, select_expired

__all__ = ["BatchQueue", "MaintenanceReport"]

BrokenExecutor = (BrokenProcessPool, BrokenThreadPool)

_id_prefix: tuple[int, str] | None = None
_id_counter = itertools.count()


def _new_job_id() -> str:
    """``job-<random per process>-<counter>``: one os.urandom per process, not per job."""
    global _id_prefix  # noqa: PLW0603 - per-process memo, renewed after fork
    if _id_prefix is None or _id_prefix[0] != os.getpid():
        _id_prefix = (os.getpid(), uuid.uuid4().hex[:12])
    return f"job-{_id_prefix[1]}-{next(_id_counter)}"


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain()`` pass did."""

    died: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class BatchQueue:
    """Run ``func(params)`` jobs with at most ``max_concurrent`` at a time.

    ``executor`` is "thread" (default), "process" (a spawn-based process pool) or
    any ``concurrent.futures.Executor`` (it is not shut down by ``shutdown``).

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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        if max_completed_jobs < 0:
            raise ValueError(f"max_completed_jobs must be >= 0, got {max_completed_jobs}")
        if progress_interval < 0:
            raise ValueError(f"progress_interval must be >= 0, got {progress_interval}")
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
        self._clock = clock
        self.store = StatusStore(status_dir, clock=clock)
        self._folder = str(self.store.directory.absolute())
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else StatusCache(status_dir)
        self._executor_kind = executor if isinstance(executor, str) else "given"
        self._executor, self._owns_executor, self._pickles = self._make_executor(executor)
        self._futures: dict[str, Future[str]] = {}
        self._submitted: dict[str, BatchJob] = {}  # read-your-writes until the cache catches up
        self._just_finished: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._retention_due = threading.Event()
        self.maintain()
        self._maintenance = threading.Thread(
            target=self._maintenance_loop,
            args=(maintenance_interval,),
            name="statusbridge-maintenance",
            daemon=True,
        )
        self._maintenance.start()

    def _make_executor(
        self, executor: Literal["thread", "process"] | Executor
    ) -> tuple[Executor, bool, bool]:
        if executor == "thread":
            pool = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="statusbridge-job")
            return pool, True, False
        if executor == "process":
            # spawn, not fork: forking a process that runs threads (the cache, the
            # observer) can deadlock the child on a lock held at fork time.
            return (
                ProcessPoolExecutor(self.max_concurrent, mp_context=get_context("spawn")),
                True,
                True,
            )
        if isinstance(executor, Executor):
            return executor, False, not isinstance(executor, ThreadPoolExecutor)
        raise ValueError(
            f"executor must be 'thread', 'process' or a concurrent.futures.Executor, "
            f"not {executor!r}"
        )

    # -- submitting -----------------------------------------------------------
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
        if self._closed:
            raise RuntimeError("this BatchQueue was shut down; create a new one")
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        given_id = job_id is not None
        job_id = validate_job_id(job_id) if job_id is not None else _new_job_id()
        if batch_id is not None:
            validate_job_id(batch_id)
        freeze(params, _path="params")
        if self._pickles:
            try:
                pickle.dumps(func)
            except Exception as exc:
                raise TypeError(
                    f"cannot send {func!r} to a worker process: {exc}. Process executors need "
                    "a function defined at module level (not a lambda or a local function)."
                ) from exc
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
                "owner": me.owner,
                "owner_start": me.start,
                "cancel_requested": False,
                "heartbeat_at": None,
            }

        if given_id:
            existing = self.store.read(job_id)
            if existing is not None and existing.is_finished:
                self.store.delete_if_unchanged([existing])  # a new run starts a new record
        job = self.store.modify(job_id, create)
        assert job is not None
        spec = RunSpec(
            self._folder,
            job_id,
            func,
            progress_interval=self.progress_interval,
            heartbeat_interval=self.heartbeat_interval,
        )
        try:
            with self._lock:
                self._submitted[job_id] = job
                try:
                    future = self._executor.submit(run_job, spec)
                except BrokenExecutor:
                    # A worker died and its pool's callback has not replaced it yet.
                    old = self._replace_broken_executor_locked()
                    if old is None:
                        raise
                    old.shutdown(wait=False, cancel_futures=True)
                    future = self._executor.submit(run_job, spec)
                self._futures[job_id] = future
        except Exception as exc:
            self._mark_if_unfinished(
                job_id, BatchStatus.FAILED, f"could not submit: {type(exc).__name__}: {exc}"
            )
            raise
        future.add_done_callback(partial(self._job_done, job_id))
        return job_id

    def _job_done(self, job_id: str, future: Future[str]) -> None:
        with self._lock:
            if self._futures.get(job_id) is future:
                del self._futures[job_id]
        if future.cancelled():
            self._mark_if_unfinished(job_id, BatchStatus.CANCELLED, "cancelled before it started")
        elif (exc := future.exception()) is not None:
            # run_job itself could not run: a broken pool, an unpicklable result, ...
            logger.error("job %s: worker failed: %s", job_id, exc)
            self._mark_if_unfinished(
                job_id, BatchStatus.FAILED, f"worker failed: {type(exc).__name__}: {exc}"
            )
            if isinstance(exc, BrokenExecutor):
                self._replace_broken_executor()
        with self._lock:
            self._just_finished.append(job_id)
        self._retention_due.set()

    def _replace_broken_executor(self) -> None:
        """A killed worker process breaks the whole pool; start a fresh one for later jobs."""
        with self._lock:
            old = self._replace_broken_executor_locked()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def _replace_broken_executor_locked(self) -> Executor | None:
        """Swap in a new pool if ours is broken; returns the old one (to shut down), or None."""
        if not self._owns_executor or self._closed or self._executor_kind == "given":
            return None
        old = self._executor
        if not getattr(old, "_broken", False):
            return None  # already replaced
        self._executor, _, _ = self._make_executor(self._executor_kind)
        logger.warning("statusbridge: worker pool was broken (a worker died); replaced it")
        return old

    def _mark_if_unfinished(self, job_id: str, status: BatchStatus, message: str) -> None:
        def change(current: BatchJob | None) -> dict[str, Any] | None:
            if current is None or current.is_finished:
                return None
            if status is BatchStatus.FAILED:
                return {"status": status, "error_message": message}
            return {"status": status, "message": message}

        try:
            self.store.modify(job_id, change)
        except Exception:
            logger.exception("job %s: could not record %s", job_id, status.value)

    # -- control -------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Cancel a job: a pending one never starts, a running one is asked to stop.

        Works for jobs of any process on this folder (the request travels in the
        file). Returns False if the job is unknown or already finished.
        """

        if not request_cancel(self.store, job_id):
            return False
        with self._lock:
            future = self._futures.get(job_id)
        if future is not None:
            future.cancel()
        signal_cancel(job_id)
        return True

    # -- reading (from the cache only) ----------------------------------------
    def get_job_status(self, job_id: str) -> BatchJob | None:
        """The job's latest known record, from memory (never from disk)."""
        cached = self.cache.get(job_id)
        local = self._submitted.get(job_id)
        if local is None:
            return cached
        if cached is not None and cached.created_at == local.created_at and cached.seq >= local.seq:
            self._submitted.pop(job_id, None)  # the cache has caught up
            return cached
        return local

    def snapshot(self) -> Snapshot:
        """The cache's current snapshot of every job in the folder."""
        return self.cache.snapshot()

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        """Block until these jobs (default: all submitted here and still running) are finished.

        Returns False on timeout. Waits on cache changes, not by polling the disk.
        """
        with self._lock:
            remaining_ids = list(job_ids) if job_ids is not None else list(self._futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self.cache.snapshot()
            remaining_ids = [
                i
                for i in remaining_ids
                if (job := self.get_job_status(i)) is not None and not job.is_finished
            ]
            if not remaining_ids:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.cache.wait_for_change(snap.version, remaining)

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
        for job in snap.values():
            if job.status is BatchStatus.RUNNING:
                alive = is_owner_alive(job, now=now, heartbeat_timeout=self.heartbeat_timeout)
                if not alive and self._fail_dead(job, now):
                    died.append(job.id)
            elif job.status is BatchStatus.PENDING:
                # Pending jobs have no heartbeat: judged only by their submitter's pid.
                alive = is_owner_alive(job, now=now, heartbeat_timeout=float("inf"))
                if not alive and self._fail_dead(job, now):
                    abandoned.append(job.id)
        removed: list[str] = []
        if self.retention_hours is not None or self.max_completed_jobs is not None:
            doomed = select_expired(
                snap.values(), self.retention_hours, self.max_completed_jobs, now=now
            )
            if doomed:
                removed = self.store.delete_if_unchanged(doomed)
        if died or abandoned:
            logger.warning(
                "statusbridge: %d job(s) whose worker died and %d abandoned pending job(s) "
                "marked FAILED",
                len(died),
                len(abandoned),
            )
        return MaintenanceReport(tuple(died), tuple(abandoned), tuple(removed))

    def _fail_dead(self, seen: BatchJob, now: datetime) -> bool:
        def change(current: BatchJob | None) -> dict[str, Any] | None:
            # Judge again under the lock, on the record as it is now.
            if current is None or current.status is not seen.status:
                return None
            timeout = self.heartbeat_timeout if seen.status is BatchStatus.RUNNING else float("inf")
            if current.owner != seen.owner or is_owner_alive(
                current, now=now, heartbeat_timeout=timeout
            ):
                return None
            if current.status is BatchStatus.RUNNING:
                why = f"worker died: process {current.owner} is gone"
                if (current.owner or "").rpartition(":")[0] != HOST:
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

    def _maintenance_loop(self, interval: float) -> None:
        next_full = time.monotonic() + interval
        while not self._stop.is_set():
            self._retention_due.wait(max(0.0, next_full - time.monotonic()))
            if self._stop.is_set():
                return
            self._retention_due.clear()
            try:
                if time.monotonic() >= next_full:
                    self.maintain()
                    next_full = time.monotonic() + interval
                else:
                    self._enforce_retention()
            except Exception:
                logger.exception("statusbridge maintenance failed (will retry)")

    def _enforce_retention(self) -> None:
        with self._lock:
            ids, self._just_finished = self._just_finished, []
        # Give the cache a moment to see the final records of the jobs that just ended.
        self.wait(ids, timeout=1.0)
        snap = self.cache.snapshot()
        finished = len(snap) - sum(1 for j in snap.values() if not j.is_finished)
        if finished > self.max_completed_jobs:
            doomed = select_expired(snap.values(), None, self.max_completed_jobs, now=self._clock())
            self.store.delete_if_unchanged(doomed)

    # -- life cycle ---------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop accepting jobs; with ``wait``, let running and queued jobs finish first."""
        if self._closed:
            return
        self._closed = True
        if cancel_pending:
            with self._lock:
                ids = list(self._futures)
            for job_id in ids:
                job = self.get_job_status(job_id)
                if job is not None and job.status is BatchStatus.PENDING:
                    self.cancel(job_id)
        if self._owns_executor:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_pending)
        self._stop.set()
        self._retention_due.set()
        self._maintenance.join(timeout=10)
        if self._owns_cache and wait:
            # Catch up with the final records before the watch stops, so that
            # reads after shutdown show how every job ended.
            self.cache.rescan()
            self.cache.close()

    def __enter__(self) -> BatchQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"<BatchQueue {self._folder!r} running={len(self._futures)}>"
