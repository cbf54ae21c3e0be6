"""Which finished records retention removes: one policy for ``StatusStore.cleanup`` and queues.

Finished records beyond the newest ``max_completed``, or older than
``max_age_hours``, go. A record that is protected (its batch still has an
unfinished job, or a manager keeps it until it saved the batch's final counts)
counts towards ``max_completed`` but is never chosen: a batch's counts never
drop mid-run. Pending and running records are never chosen.

Who asks decides the order "newest" means: ``StatusStore.cleanup`` sorts by
when each job finished; a queue uses the order its cache saw them finish
(``statusbridge.jobs._retention.FinishOrder``), which survives a clock step.
The age of a job is, where the caller knows it (``ages``), how long ago this
process saw it finish; else its ``completed_at``, on the writer's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from statusbridge.record import BatchJob
from statusbridge.record._ranges import NumberRange

__all__ = ["RetentionPolicy", "finished_at", "unprotected"]


def unprotected(job: BatchJob) -> bool:
    return False


def finished_at(job: BatchJob) -> datetime | None:
    """When a finished job finished (or last changed, for a record without ``completed_at``)."""
    return job.completed_at or job.updated_at or job.created_at


@dataclass(frozen=True)
class RetentionPolicy:
    """How many finished records to keep, and for how long (None: no limit)."""

    max_completed: int | None = None
    max_age_hours: float | None = None

    def __post_init__(self) -> None:
        NumberRange(optional=True).check("max_age_hours", self.max_age_hours)
        NumberRange(integer=True, optional=True).check("max_completed", self.max_completed)

    def too_old(
        self, job: BatchJob, now: datetime, ages: Mapping[str, float] | None = None
    ) -> bool:
        """Whether the finished ``job`` finished more than the age limit ago.

        ``ages``: seconds since this process saw a job finish (a writer's clock may be
        a day off); a job not in it is judged by its ``completed_at`` (or last change).
        """
        if self.max_age_hours is None:
            return False
        age = None if ages is None else ages.get(job.id)
        if age is not None:
            return age > self.max_age_hours * 3600
        when = job.completed_at or job.updated_at
        return when is not None and now - when > timedelta(hours=self.max_age_hours)

    def expired(
        self,
        jobs: Iterable[BatchJob],
        *,
        now: datetime,
        protected: Callable[[BatchJob], bool] = unprotected,
        ages: Mapping[str, float] | None = None,
    ) -> list[BatchJob]:
        """The finished, unprotected ``jobs`` older than the age limit (any order)."""
        return [
            j for j in jobs if j.is_finished and self.too_old(j, now, ages) and not protected(j)
        ]

    def select(
        self,
        newest_first: Iterable[BatchJob],
        *,
        now: datetime,
        protected: Callable[[BatchJob], bool] = unprotected,
        ages: Mapping[str, float] | None = None,
    ) -> list[BatchJob]:
        """Of these jobs, newest first, the finished ones the policy removes."""
        finished = (job for job in newest_first if job.is_finished)
        doomed: list[BatchJob] = []
        for position, job in enumerate(finished):
            too_many = self.max_completed is not None and position >= self.max_completed
            if (too_many or self.too_old(job, now, ages)) and not protected(job):
                doomed.append(job)
        return doomed
