"""BatchSummary: what a group of jobs adds up to, from a tally kept as changes are applied."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

import immutables

from statusbridge.cache._aggregates import (
    STATUSES,
    Tally,
    finished_run_time,
    progress_of,
    state_of,
    tally_jobs,
)
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._eta import batch_eta
from statusbridge.record._model import utc_now
from statusbridge.record._share import floor_share

__all__ = ["BatchSummary", "summarize", "summary_of"]

_NO_JOBS: immutables.Map[str, BatchJob] = immutables.Map()
_EMPTY_COUNTS: Mapping[BatchStatus, int] = MappingProxyType({s: 0 for s in BatchStatus})


@dataclass(frozen=True)
class BatchSummary:
    """Counts and overall progress of a group of jobs (a batch, or all of them).

    ``state`` is "empty", "pending", "running", "completed", "failed" (finished,
    some failed) or "cancelled" (finished, some cancelled).
    """

    id: str | None
    name: str | None
    total: int
    counts: Mapping[BatchStatus, int] = field(default_factory=lambda: _EMPTY_COUNTS)
    progress: float = 0.0
    state: str = "empty"
    # For the ETA (see ``eta``): the running jobs by id, and the summed
    # started -> completed seconds of the finished jobs that have both times.
    # ``running`` is the snapshot's own index, shared: a summary costs O(1) to
    # make however many jobs run, and only ``eta`` walks it.
    running: Mapping[str, BatchJob] = field(default_factory=lambda: _NO_JOBS, repr=False)
    finished_seconds: float = 0.0
    timed_finished: int = 0

    @property
    def finished(self) -> int:
        c = self.counts
        return c[BatchStatus.COMPLETED] + c[BatchStatus.FAILED] + c[BatchStatus.CANCELLED]

    @property
    def is_done(self) -> bool:
        """True when no job is pending or running (also for an empty group)."""
        return self.finished == self.total

    @property
    def completed(self) -> int:
        """How many jobs completed (finished without failing or being cancelled)."""
        return self.counts[BatchStatus.COMPLETED]

    @property
    def all_completed(self) -> bool:
        """True when the group has jobs and every one of them completed."""
        return self.total > 0 and self.completed == self.total

    @property
    def done_share(self) -> float:
        """How much of the group has *finished*, 0..1: ``progress``.

        Finished jobs count 1 whatever their outcome, running jobs their
        progress, pending jobs 0. It reaches 1.0 when no job is left to run,
        also when every job failed or was cancelled: it says "nothing left to
        wait for", never "it worked". Views say it in words ("6 of 6 done"),
        not as a bar or a percentage.
        """
        return self.progress

    @property
    def completed_share(self) -> float:
        """How much of the group's work *completed*, 0..1: what bars and percentages show.

        Completed jobs count 1, running jobs their progress, pending, failed and
        cancelled jobs 0. 1.0 (a full bar, "100%") only when every job
        completed: a batch of 1 failed and 5 cancelled jobs shows 0%, one with 5
        of 6 completed and 1 failed stays at 83% for good.

        >>> from statusbridge.cache._snapshot import summarize
        >>> jobs = [BatchJob("a", "completed"), BatchJob("b", "failed"),
        ...         BatchJob("c", "running", progress=0.5), BatchJob("d", "cancelled")]
        >>> s = summarize(jobs)
        >>> s.done_share, s.completed_share
        (0.875, 0.375)
        """
        if self.total == 0:
            return 0.0
        if self.completed == self.total:
            return 1.0
        # progress = (finished + running progress) / total; take the unfinished work back out.
        lost = self.counts[BatchStatus.FAILED] + self.counts[BatchStatus.CANCELLED]
        share = self.progress - lost / self.total
        return min(max(0.0, share), math.nextafter(1.0, 0.0))

    @property
    def running_jobs(self) -> tuple[BatchJob, ...]:
        """The group's running jobs, by id."""
        return tuple(sorted(self.running.values(), key=_by_id))

    @property
    def mean_duration(self) -> float | None:
        """Mean started -> completed seconds of the finished jobs (None before one finished)."""
        return self.finished_seconds / self.timed_finished if self.timed_finished else None

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds until every job has finished; see ``eta``."""
        return self.eta()

    def eta(self, *, now: datetime | None = None) -> float | None:
        """Estimated seconds until every job has finished, at ``now`` (default: current time).

        Running jobs by their own progress (or the finished jobs' mean duration
        when they report none); pending jobs by that mean, run as many side by
        side as run now. None for an empty group, or when neither progress nor
        finished jobs give a basis; 0 once all are finished.
        """
        if self.total == 0:
            return None
        return batch_eta(
            self.running_jobs,
            self.counts[BatchStatus.PENDING],
            self.mean_duration,
            utc_now() if now is None else now,
        )

    def __str__(self) -> str:
        """One line for logs and terminals: ``Test: running 55% (2 running, 2 completed)``."""
        parts = ", ".join(f"{n} {s.value}" for s, n in self.counts.items() if n)
        label = self.name or self.id or "all jobs"
        # The completed share, rounded down: "100%" only when every job completed.
        pct = floor_share(self.completed_share, 100)
        return f"{label}: {self.state} {pct}% ({parts or 'no jobs'})"

    def with_name(self, name: str | None) -> BatchSummary:
        return replace(self, name=name)


def summarize(
    jobs: Iterable[BatchJob], *, batch_id: str | None = None, name: str | None = None
) -> BatchSummary:
    """Summarise ``jobs``: finished jobs count as progress 1.0, pending as 0.0.

    >>> jobs = [BatchJob("a", BatchStatus.COMPLETED), BatchJob("b", "running", progress=0.5)]
    >>> s = summarize(jobs)
    >>> s.total, s.progress, s.state
    (2, 0.75, 'running')
    """
    jobs = tuple(jobs)
    running = immutables.Map({j.id: j for j in jobs if j.status is BatchStatus.RUNNING})
    return summary_of(tally_jobs(jobs), running, batch_id=batch_id, name=name)


def _by_id(job: BatchJob) -> str:
    return job.id


def summary_of(
    tally: Tally,
    running: Mapping[str, BatchJob] | None = None,
    *,
    batch_id: str | None = None,
    name: str | None = None,
) -> BatchSummary:
    """The summary a tally and the group's running jobs stand for (what ``summarize`` returns)."""
    counts = dict(zip(STATUSES, tally, strict=False))
    finished_seconds, timed_finished = finished_run_time(tally)
    return BatchSummary(
        id=batch_id,
        name=name,
        total=sum(counts.values()),
        counts=MappingProxyType(counts),
        progress=progress_of(tally),
        state=state_of(tally),
        running=_NO_JOBS if running is None else running,
        finished_seconds=finished_seconds,
        timed_finished=timed_finished,
    )
