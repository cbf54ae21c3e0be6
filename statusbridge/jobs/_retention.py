"""Which finished records a queue may remove, and in what order they finished.

Two rules keep a batch's summary true after retention:

* a record is never removed while its batch is still open: a batch with an
  unfinished job, or one a ``BatchManager`` protects until it has saved the
  batch's final counts with its definition;
* "the newest N finished records" is judged by the order in which this process
  *saw* jobs finish (a counter, fed by the cache), not by ``completed_at``
  alone: after the wall clock steps back, the job that just finished would look
  like the oldest one and be the first to go;
* "older than ``max_age_hours``" likewise counts from when this process saw the
  job finish, on its own monotonic clock: a writer on a host whose clock runs a
  day behind writes a ``completed_at`` that looks a day old at once. Only jobs
  that were finished before this process started watching, which it never saw
  finish, are judged by their ``completed_at``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from statusbridge.cache import Snapshot
from statusbridge.jobs._liveness import LocalClock
from statusbridge.record import BatchJob
from statusbridge.store._retention import RetentionPolicy, finished_at

__all__ = ["RETENTION_GROUP", "FinishOrder", "retention_lag"]

# While a queue's jobs keep finishing, its count-based retention lets up to this
# many records beyond ``max_completed_jobs`` gather and removes them together
# (one lock per stripe, one cache update): see ``retention_lag``.
RETENTION_GROUP = 64


def retention_lag(max_completed: int) -> int:
    """How far past ``max_completed`` finished records may run while jobs still finish.

    A tenth of the limit, at most ``RETENTION_GROUP``: a limit below 10 is kept
    exactly. Once the queue is idle, and at every maintenance pass, retention
    trims to the limit itself.
    """
    return min(RETENTION_GROUP, max_completed // 10)


class FinishOrder:
    """Numbers jobs in the order the cache saw them finish; fed by ``StatusCache.subscribe``.

    Jobs already finished when the queue started have no number and count as
    older than every numbered one (among themselves, ``completed_at`` decides),
    until their record changes: then they are numbered like a job that finished.
    Once ``seed`` has put those in front, the dict's order is oldest first, so
    the oldest finished jobs are found without sorting them all again.
    """

    def __init__(self, clock: LocalClock | None = None) -> None:
        self._counter = itertools.count(1)
        self._rank: dict[str, int] = {}  # oldest first; 0 for jobs finished before us
        self._seen_at: dict[str, float] = {}  # numbered jobs: when we saw them finish
        self._clock = clock or LocalClock()
        self._lock = threading.Lock()

    def seed(self, snapshot: Snapshot) -> None:
        """Put the jobs ``snapshot`` shows finished and unnumbered first, oldest first."""
        with self._lock:
            earlier = sorted(
                (j for j in snapshot.values() if j.is_finished and j.id not in self._rank),
                key=_finished_when,
            )
            self._rank = {**{j.id: 0 for j in earlier}, **self._rank}

    def oldest_unprotected(
        self, snapshot: Snapshot, count: int, protected: Callable[[BatchJob], bool]
    ) -> list[BatchJob]:
        """Of the ``count`` oldest jobs ``snapshot`` shows finished, those not protected.

        What ``RetentionPolicy.select`` picks by count for ``max_completed`` = finished -
        ``count``, in O(count + protected or stale entries passed on the way).
        """
        doomed: list[BatchJob] = []
        with self._lock:
            for job_id in self._rank:
                if count <= 0:
                    break
                job = snapshot.get(job_id)
                if job is None or not job.is_finished:
                    continue  # the snapshot is older than this entry
                count -= 1
                if not protected(job):
                    doomed.append(job)
        return doomed

    def select(
        self,
        snapshot: Snapshot,
        policy: RetentionPolicy,
        *,
        now: datetime,
        protected: Callable[[BatchJob], bool],
    ) -> list[BatchJob]:
        """What ``policy.select`` picks from the finished jobs newest first, without
        sorting every record.

        Beyond ``max_completed``: the oldest few, from the finish order. Too old:
        one pass comparing each finished job's time with the cut-off, only when
        the policy has an age limit (the maintenance pass).
        """
        doomed: list[BatchJob] = []
        if policy.max_completed is not None:
            beyond = snapshot.summary().finished - policy.max_completed
            doomed = self.oldest_unprotected(snapshot, beyond, protected)
        if policy.max_age_hours is None:
            return doomed
        chosen = {job.id for job in doomed}
        ages = self.ages(now)
        doomed.extend(
            job
            for job in policy.expired(snapshot.values(), now=now, protected=protected, ages=ages)
            if job.id not in chosen
        )
        return doomed

    def ages(self, now: datetime) -> Mapping[str, float]:
        """Seconds since this process saw each numbered job finish, at ``now``."""
        with self._lock:
            return {job_id: self._clock.age(seen, now) for job_id, seen in self._seen_at.items()}

    def __call__(self, snapshot: Snapshot, changed_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in changed_ids:
                job = snapshot.get(job_id)
                if job is None or not job.is_finished:
                    self._rank.pop(job_id, None)  # removed, or restarted under the same id
                    self._seen_at.pop(job_id, None)
                elif not self._rank.get(job_id):
                    # Newly finished; or finished before we started and rewritten since:
                    # numbered now (as newest), so that no unnumbered job ever needs
                    # moving among the others when its completed_at changes.
                    self._rank.pop(job_id, None)
                    self._rank[job_id] = next(self._counter)
                    self._seen_at[job_id] = self._clock.monotonic()

    def ranks(self) -> Mapping[str, int]:
        with self._lock:
            return dict(self._rank)


def _finished_when(job: BatchJob) -> tuple[float, str]:
    when = finished_at(job)
    return (when.timestamp() if when else 0.0, job.id)
