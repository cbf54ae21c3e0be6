"""Transitions seen by a cache: which job entered which status, which batch just finished.

Built only on the cache's public API (``snapshot``, ``subscribe``), so it works
on every backend. Each transition is reported once per follower: what the
follower last saw of each job is remembered (also for a while after the job
disappears), so a rescan, a reload or a record that vanishes and comes back
unchanged reports nothing new. History present when following starts is not
reported unless ``replay=True``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import datetime

from statusbridge.cache._cache import StatusCache
from statusbridge.cache._snapshot import BatchSummary, Snapshot
from statusbridge.record import BatchJob, BatchStatus

__all__ = [
    "BatchHook",
    "JobHook",
    "TransitionListener",
    "TransitionTracker",
    "on_batch_finished",
    "on_job_finished",
]

logger = logging.getLogger(__name__)

JobHook = Callable[[BatchJob], object]
BatchHook = Callable[[BatchSummary, tuple[BatchJob, ...]], object]
TransitionListener = Callable[[BatchJob, BatchStatus | None], object]

# What is remembered of a job: enough to tell a new transition from the same state seen again.
_Seen = tuple[BatchStatus, datetime | None, datetime | None]

DEFAULT_MEMORY = 100_000


def _seen(job: BatchJob) -> _Seen:
    return (job.status, job.created_at, job.completed_at)


class TransitionTracker:
    """Follow ``cache`` and report transitions on its cache thread (or here, for ``replay``).

    ``on_transition(job, previous_status)`` for each job seen entering a status
    (``previous_status`` is None the first time a job is seen); ``on_batch_done(summary,
    jobs)`` when a job's finishing takes its batch from unfinished to all finished
    (records added to or removed from a finished batch report nothing). A raising
    callback is logged and the others still run. ``memory`` bounds how many
    vanished jobs are remembered (one forgotten and then restored is reported
    again).

    Callbacks run one at a time, in order, with no lock held (so one may take the
    application's locks, close its tracker or wait for the cache, and ``close()``
    never waits for one): calls are queued, and run by the thread already running
    them if there is one (the one replaying), else by the cache thread.
    """

    def __init__(
        self,
        cache: StatusCache,
        *,
        on_transition: TransitionListener | None = None,
        on_batch_done: BatchHook | None = None,
        replay: bool = False,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        self._on_transition = on_transition
        self._on_batch_done = on_batch_done
        self._memory = memory
        # Guards the state below; never held while a callback runs.
        self._lock = threading.Lock()
        self._outbox: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()
        self._dispatching = False  # some thread is running the outbox's calls
        # What was seen last is the previous snapshot itself (it shares its structure
        # with the next one, so keeping it costs next to nothing); only what vanished
        # from it is remembered apart, in bounded memories.
        self._previous = Snapshot()
        self._gone: OrderedDict[str, _Seen] = OrderedDict()
        self._closed = False
        with self._lock:
            # Subscribe first, then take the baseline: a change landing in between is
            # either in the baseline or arrives later with a higher version, never lost.
            self._unsubscribe = cache.subscribe(self._changed)
            snap = cache.snapshot()
            if replay:
                self._apply(snap, snap.keys())
                # Claimed before the lock is released: the history is reported here,
                # before this returns, even if the cache thread queues calls meanwhile.
                self._dispatching = True
            self._previous = snap
        if replay:
            self._run_outbox()

    def close(self) -> None:
        """Stop following; calls not started yet are dropped. May be called twice.

        Never waits for a running callback (it may be waiting for the caller); one
        running on another thread may still finish after this returns.
        """
        self._unsubscribe()
        with self._lock:
            self._closed = True
            self._outbox.clear()

    def __enter__(self) -> TransitionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _changed(self, snap: Snapshot, changed: frozenset[str]) -> None:
        with self._lock:
            previous = self._previous
            if self._closed or snap.version <= previous.version:
                return  # already part of the baseline
            # A version gap (changes published between subscribing and the baseline):
            # compare everything once rather than trust the last change alone.
            ids = changed if snap.version == previous.version + 1 else {*snap.keys(), *previous}
            self._apply(snap, ids)
            self._previous = snap
            if self._dispatching or not self._outbox:
                return  # nothing to call, or the thread running the calls runs these too
            self._dispatching = True
        self._run_outbox()

    def _run_outbox(self) -> None:
        """Run the queued calls, outside the lock, until none is left (the caller claimed
        ``_dispatching``; this thread gives it back when the outbox is empty)."""
        try:
            while True:
                with self._lock:
                    if self._closed or not self._outbox:
                        self._outbox.clear()
                        self._dispatching = False
                        return
                    callback, args = self._outbox.popleft()
                self._call(callback, *args)
        except BaseException:
            with self._lock:
                self._dispatching = False
            raise

    def _apply(self, snap: Snapshot, ids: Iterable[str]) -> None:
        """Queue the calls for what changed from ``self._previous`` to ``snap`` among ``ids``."""
        previous = self._previous
        finishing: set[str] = set()  # batches where a job has just finished
        for job_id in ids:
            job = snap.get(job_id)
            before = previous.get(job_id)
            if job is None:
                if before is not None:
                    self._remember(job_id, _seen(before))
                continue
            old = _seen(before) if before is not None else self._gone.pop(job_id, None)
            seen = _seen(job)
            if old == seen:
                continue  # the same state seen again: a rescan, a reload, another field
            if self._on_transition is not None:
                self._outbox.append((self._on_transition, (job, None if old is None else old[0])))
            if job.is_finished and job.batch_id is not None:
                finishing.add(job.batch_id)
        if self._on_batch_done is None:
            return
        for batch_id in sorted(finishing):
            summary = snap.summary(batch_id)
            was = previous.summary(batch_id)
            if summary.is_done and not (was.total and was.is_done):
                self._outbox.append((self._on_batch_done, (summary, snap.batch(batch_id))))

    def _remember(self, job_id: str, seen: _Seen) -> None:
        gone = self._gone
        gone[job_id] = seen
        gone.move_to_end(job_id)
        while len(gone) > self._memory:
            gone.popitem(last=False)

    @staticmethod
    def _call(callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("statusbridge hook %r raised; continuing", callback)


def on_job_finished(
    cache: StatusCache, callback: JobHook, *, replay: bool = False
) -> Callable[[], None]:
    """Call ``callback(job)`` once each time a job reaches COMPLETED, FAILED or CANCELLED.

    Once per transition for this registration, also across rescans and reloads;
    jobs already finished when it is registered are skipped unless ``replay=True``
    (then they are reported before this returns, on this thread). Later calls run
    on the cache thread (or this one, while it replays): keep them short, hand
    slow work (mail, chat) to a queue.
    A raising callback is logged and never breaks the cache. Returns a function
    that stops it.
    """

    def transition(job: BatchJob, previous: BatchStatus | None) -> None:
        if job.is_finished:
            callback(job)

    return TransitionTracker(cache, on_transition=transition, replay=replay).close


def on_batch_finished(
    cache: StatusCache, callback: BatchHook, *, replay: bool = False
) -> Callable[[], None]:
    """Call ``callback(summary, jobs)`` once each time a batch's last unfinished job finishes.

    A batch is finished when every job the cache knows in it is. Same guarantees
    as ``on_job_finished``; a batch that gets an unfinished job and finishes again
    is reported again; records removed or added finished report nothing.
    Returns a function that stops it.
    """
    return TransitionTracker(cache, on_batch_done=callback, replay=replay).close
