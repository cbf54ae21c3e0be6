"""The jobs a queue has handed to its pool, its batch feeds, and its starts to try again.

A queue with unfinished jobs is kept alive even if the application dropped it
(a Streamlit rerun does), so its jobs still get final records and retention:
``start`` puts it in a process-wide set, and the last job done takes it out.
Owns its lock and the state that changes with it; relies on the pool.
"""

from __future__ import annotations

import inspect
import itertools
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from statusbridge.jobs._batch_feed import BatchFeed
from statusbridge.jobs._pool import WorkerPool
from statusbridge.jobs._runner import RunSpec, run_job
from statusbridge.jobs._write_retries import START_TRIES, WRITE_BACKOFF, WriteRetries
from statusbridge.record import BatchJob
from statusbridge.store import StatusStore

__all__ = ["Restart", "Submission", "Submissions", "new_job_id", "weak_hook", "write_new"]

T = TypeVar("T")

# Queues with unfinished jobs stay alive even if the application dropped them.
_busy: set[object] = set()
_busy_lock = threading.Lock()


@dataclass
class Submission:
    spec: RunSpec
    future: Future[Any]
    executor: Executor
    attempts: int = 1


@dataclass(frozen=True)
class Restart:
    """A job whose RUNNING write failed: submitted again at ``due`` (monotonic)."""

    due: float
    sub: Submission


def _identity(value: T) -> T:
    return value


def weak_hook(hook: T) -> Callable[[], T | None]:
    """A weak reference to a bound method; a plain function is held strongly."""
    if inspect.ismethod(hook):
        return weakref.WeakMethod(hook)
    return partial(_identity, hook)


def _post_done(post: Callable[[Any], None], job_id: str, future: Future[Any]) -> None:
    # Runs inside the pool, possibly under its internal lock: no locks, no I/O.
    post((job_id, future))


class Submissions:
    """Jobs submitted to the pool and not done, batches being fed, starts to try again.

    ``post`` hands an event to the supervisor; a future's done-callback only
    posts ``(job_id, future)``. ``owner`` is the queue (weakly), kept alive while busy.
    """

    def __init__(
        self, pool: WorkerPool, owner: weakref.ref[Any], post: Callable[[Any], None]
    ) -> None:
        self._pool = pool
        self._owner = owner
        self._post = post
        self._lock = threading.Lock()  # never held around anything but the pool's submit
        self.subs: dict[str, Submission] = {}
        self.feeds: list[BatchFeed] = []  # started batches whose jobs are still being fed
        self.restarts: dict[str, Restart] = {}  # by job id
        self._idle_hooks: list[Callable[[], Callable[[], None] | None]] = []
        self._cancel_hooks: list[Callable[[], Callable[[str], bool] | None]] = []
        self.closed = False
        self.cancel_pending = False  # set by shutdown(cancel_pending=True)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.subs

    def get(self, job_id: str) -> Submission | None:
        return self.subs.get(job_id)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.subs)

    @property
    def running(self) -> int:
        """Jobs submitted and not done yet, counting those their batch's feed has not fed."""
        with self._lock:
            return len(self.subs) + sum(feed.remaining for feed in self.feeds)

    @property
    def idle(self) -> bool:
        return not self.subs and not self.feeds

    def start(self, spec: RunSpec, *, attempts: int) -> None:
        # Holding our lock around the pool's submit is safe because no done-callback
        # ever takes it (they only post events); it makes "registered as busy" and
        # "has a submission" one step for ``forget``.
        with self._lock:
            self._mark_busy(True)
            try:
                future, executor = self._pool.submit(run_job, spec)
            except BaseException:
                if not self.subs:
                    self._mark_busy(False)
                raise
            self.subs[spec.job_id] = Submission(spec, future, executor, attempts)
        # Added after the bookkeeping: a future already done calls back at once.
        future.add_done_callback(partial(_post_done, self._post, spec.job_id))

    def forget(self, job_id: str, sub: Submission) -> None:
        """``sub`` is done (``check_idle`` then says whether the queue is idle)."""
        with self._lock:
            if self.subs.get(job_id) is sub:
                del self.subs[job_id]

    def add_idle_hook(self, hook: Callable[[], None]) -> None:
        with self._lock:
            self._idle_hooks.append(weak_hook(hook))

    def add_cancel_hook(self, hook: Callable[[str], bool]) -> None:
        with self._lock:
            self._cancel_hooks.append(weak_hook(hook))

    def cancel_unrecorded(self, job_id: str) -> bool:
        """Whether a cancel hook knew ``job_id`` (a batch's job with no record) and cancelled it."""
        with self._lock:
            hooks = [ref() for ref in self._cancel_hooks]
        return any(hook is not None and hook(job_id) for hook in hooks)

    def check_idle(self) -> None:
        """Run the idle hooks if nothing runs here any more."""
        with self._lock:
            idle = self.idle
            hooks = [ref() for ref in self._idle_hooks] if idle else []
            if idle:
                self._mark_busy(False)
        for hook in hooks:
            if hook is not None:
                hook()

    def _mark_busy(self, busy: bool) -> None:
        owner = self._owner()
        with _busy_lock:
            if busy and owner is not None:
                _busy.add(owner)
            elif not busy:
                _busy.discard(owner)

    # -- batch feeds ----------------------------------------------------------
    def add_feed(self, feed: BatchFeed) -> None:
        with self._lock:
            self.feeds.append(feed)
            self._mark_busy(True)

    def remove_feed(self, feed: BatchFeed) -> None:
        with self._lock:
            if feed in self.feeds:
                self.feeds.remove(feed)

    def stop_feed(self, batch_id: str) -> set[str]:
        """The batch was cancelled here: its feeds record the jobs not fed yet CANCELLED.

        Returns the ids of its jobs not fed yet (none of them will start).
        """
        with self._lock:
            feeds = [f for f in self.feeds if f.batch_id == batch_id]
        unfed: set[str] = set()
        for feed in feeds:
            feed.cancelled = True
            unfed |= feed.unsubmitted.copy()  # one C call: safe while the feed thread removes
        return unfed

    def feeding(self, job_id: str) -> BatchFeed | None:
        """The feed that has not submitted ``job_id`` yet, if any."""
        with self._lock:
            feeds = list(self.feeds)
        return next((f for f in feeds if job_id in f.unsubmitted), None)

    def join_feeds(self, deadline: float | None) -> bool:
        """Wait for the batch feeds under way; False if ``deadline`` (monotonic) came first."""
        while True:
            with self._lock:
                feed = self.feeds[0] if self.feeds else None
            if feed is None:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            feed.finished.wait(remaining)
            if feed.finished.is_set():
                self.remove_feed(feed)

    # -- starts to try again ----------------------------------------------------
    def start_again_later(self, sub: Submission) -> bool:
        """Its RUNNING write failed: start it again after a while (False: no more tries)."""
        if self.closed or sub.attempts >= START_TRIES:
            return False
        delay = WRITE_BACKOFF.before(sub.attempts)
        with self._lock:
            self.restarts[sub.spec.job_id] = Restart(time.monotonic() + delay, sub)
        return True

    def restarts_due(self, *, force: bool = False) -> list[Submission]:
        now = time.monotonic()
        with self._lock:
            due = [k for k, v in self.restarts.items() if force or v.due <= now]
            return [self.restarts.pop(job_id).sub for job_id in due]

    def next_restart(self) -> float | None:
        with self._lock:
            return min((restart.due for restart in self.restarts.values()), default=None)


_id_prefix: tuple[int, str] | None = None
_id_counter = itertools.count()


def new_job_id() -> str:
    """``job-<random per process>-<counter>``: one os.urandom per process, not per job."""
    global _id_prefix  # noqa: PLW0603 - per-process memo, renewed after fork
    if _id_prefix is None or _id_prefix[0] != os.getpid():
        _id_prefix = (os.getpid(), uuid.uuid4().hex[:12])
    return f"job-{_id_prefix[1]}-{next(_id_counter)}"


def write_new(
    store: StatusStore,
    retries: WriteRetries,
    job_id: str,
    fields: dict[str, Any],
    *,
    given_id: bool,
) -> BatchJob:
    """Write a new job's PENDING record (a new run of a finished job replaces its record)."""
    if given_id:
        retries.write_earlier_run(job_id)
        existing = store.read(job_id)
        if existing is not None and existing.is_finished:
            store.delete_if_unchanged([existing])  # a new run starts a new record

    def create(current: BatchJob | None) -> dict[str, Any]:
        if current is not None and not current.is_finished:
            raise ValueError(f"job {job_id!r} already exists and is {current.status.value}")
        return fields

    written = store.modify(job_id, create)
    assert written is not None
    return written
