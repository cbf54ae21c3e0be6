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
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

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
_Seen = tuple[BatchStatus, datetime | None, datetime | None, str | None]

DEFAULT_MEMORY = 100_000
_V = TypeVar("_V")


def _seen(job: BatchJob) -> _Seen:
    return (job.status, job.created_at, job.completed_at, job.batch_id)


class TransitionTracker:
    """Follow ``cache`` and report transitions on its cache thread (or here, for ``replay``).

    ``on_transition(job, previous_status)`` for each job seen entering a status
    (``previous_status`` is None the first time a job is seen); ``on_batch_done(summary,
    jobs)`` when every job of a batch has finished. A raising callback is logged and
    the others still run. ``memory`` bounds how many vanished jobs and batches are
    remembered. Callbacks must not call ``cache.rescan()`` (it would wait for the
    thread that runs them).
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
        self._lock = threading.Lock()
        self._live: dict[str, _Seen] = {}
        self._gone: OrderedDict[str, _Seen] = OrderedDict()
        self._batches_done: OrderedDict[str, int] = OrderedDict()
        self._closed = False
        with self._lock:
            # Subscribe first, then take the baseline: a change landing in between is
            # either in the baseline or arrives later with a higher version, never lost.
            self._unsubscribe = cache.subscribe(self._changed)
            snap = cache.snapshot()
            self._version = snap.version
            if replay:
                self._apply(snap, snap.keys())
            else:
                self._live = {job_id: _seen(job) for job_id, job in snap.items()}
                for batch_id in snap.batch_ids():
                    key = self._done_key(snap, batch_id)
                    if key is not None:
                        self._batches_done[batch_id] = key

    def close(self) -> None:
        """Stop following; no callback runs after this returns. May be called twice."""
        self._unsubscribe()
        with self._lock:
            self._closed = True

    def __enter__(self) -> TransitionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _changed(self, snap: Snapshot, changed: frozenset[str]) -> None:
        with self._lock:
            if self._closed or snap.version <= self._version:
                return  # already part of the baseline
            # A version gap (changes published between subscribing and the baseline):
            # compare everything once rather than trust the last change alone.
            ids = changed if snap.version == self._version + 1 else {*snap.keys(), *self._live}
            self._version = snap.version
            self._apply(snap, ids)

    def _apply(self, snap: Snapshot, ids: Iterable[str]) -> None:
        batches: set[str] = set()
        for job_id in ids:
            job = snap.get(job_id)
            old = self._live.get(job_id)
            if job is None:
                if old is not None:
                    del self._live[job_id]
                    self._remember(self._gone, job_id, old)
                    if old[3] is not None:
                        batches.add(old[3])
                continue
            if old is None:
                old = self._gone.pop(job_id, None)
            seen = _seen(job)
            self._live[job_id] = seen
            if old is not None and old[3] is not None:
                batches.add(old[3])
            if job.batch_id is not None:
                batches.add(job.batch_id)
            if (old is None or old[:3] != seen[:3]) and self._on_transition is not None:
                self._call(self._on_transition, job, None if old is None else old[0])
        if self._on_batch_done is None:
            return
        for batch_id in sorted(batches):
            key = self._done_key(snap, batch_id)
            if key is not None and self._batches_done.get(batch_id) != key:
                self._remember(self._batches_done, batch_id, key)
                self._call(self._on_batch_done, snap.summary(batch_id), snap.batch(batch_id))

    @staticmethod
    def _done_key(snap: Snapshot, batch_id: str) -> int | None:
        """Identifies a finished batch's final state (None while unfinished or empty)."""
        summary = snap.summary(batch_id)
        if not summary.total or not summary.is_done:
            return None
        return hash(tuple((j.id, *_seen(j)[:3]) for j in snap.batch(batch_id)))

    def _remember(self, memory: OrderedDict[str, _V], key: str, value: _V) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > self._memory:
            memory.popitem(last=False)

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
    on the cache thread: keep them short, hand slow work (mail, chat) to a queue.
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
    """Call ``callback(summary, jobs)`` once each time every job of a batch has finished.

    Same guarantees as ``on_job_finished``; a batch that gets a new job and
    finishes again is reported again. Returns a function that stops it.
    """
    return TransitionTracker(cache, on_batch_done=callback, replay=replay).close
