"""Time-left estimates for one job and for a group of jobs, as pure functions of ``now``.

A job's estimate extrapolates its own progress linearly; a group's also uses
how long its finished jobs took and how many run side by side. Neither can
know more than the records say: a job that never reports progress has no
estimate of its own, and a group with such jobs needs finished jobs to guess from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from statusbridge.record._model import BatchJob, BatchStatus

__all__ = ["CLOCK_SKEW_LIMIT", "batch_eta", "elapsed_seconds", "job_eta"]


CLOCK_SKEW_LIMIT = 60.0
"""Seconds a writer's timestamps may be apart from this process's clock before
statusbridge treats them as another clock (``elapsed_seconds``, ``health().clock_skew``)."""


def elapsed_seconds(job: BatchJob, now: datetime) -> float | None:
    """Seconds from start to finish (or to ``now`` while unfinished); None before it started.

    Never negative, never skewed: a worker's clock may run ahead of or behind the
    viewer's. While the job runs and its last write (heartbeat) is more than
    ``CLOCK_SKEW_LIMIT`` away from ``now``, the viewer's clock cannot be compared with
    the writer's: the time is counted on the writer's clock alone, up to that write.
    """
    if job.started_at is None:
        return None
    if job.is_finished and job.completed_at is not None:
        end = job.completed_at
    else:
        end = now
        last = max((t for t in (job.heartbeat_at, job.updated_at) if t is not None), default=None)
        if last is not None and abs((now - last).total_seconds()) > CLOCK_SKEW_LIMIT:
            end = last  # a clock apart (or a writer gone quiet): its own clock only
    return max(0.0, (end - job.started_at).total_seconds())


def job_eta(job: BatchJob, now: datetime) -> float | None:
    """Seconds left for a running job: ``elapsed * (1 - p) / p``, with ``p`` its progress.

    None unless the job is RUNNING with a start time and a progress above 0
    (nothing to extrapolate from); 0 once its progress reaches 1. The rate is
    taken up to ``now``, so a job that stops reporting sees its estimate grow (for
    ``CLOCK_SKEW_LIMIT``: past that, ``elapsed_seconds`` stops at its last write).
    """
    progress = job.progress
    if job.status is not BatchStatus.RUNNING or not progress or progress <= 0:
        return None
    elapsed = elapsed_seconds(job, now)
    if elapsed is None:
        return None
    return elapsed * (1.0 - progress) / progress


def batch_eta(
    running: Iterable[BatchJob],
    pending: int,
    mean_duration: float | None,
    now: datetime,
) -> float | None:
    """Seconds until a group's last job finishes, or None when nothing supports a guess.

    Each running job needs its own estimate (``job_eta``), or else the mean
    duration of the group's finished jobs minus its elapsed time. Pending jobs
    are assumed to take that mean each and to start as soon as one of the
    currently running jobs' slots frees up (concurrency = jobs running now, at
    least 1). Without finished jobs, the mean is projected from the running
    jobs' progress. 0 when nothing is left.
    """
    running = tuple(running)
    projected: list[float] = []
    for job in running:
        elapsed = elapsed_seconds(job, now)
        if elapsed is not None and job.progress:
            projected.append(elapsed / job.progress)
    mean = mean_duration if mean_duration is not None else _mean(projected)
    free: list[float] = []
    for job in running:
        left = job_eta(job, now)
        if left is None:
            if mean is None:
                return None
            left = max(0.0, mean - (elapsed_seconds(job, now) or 0.0))
        free.append(left)
    if pending <= 0:
        return max(free, default=0.0)
    if mean is None:
        return None
    return _makespan(sorted(free) or [0.0], pending, mean)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _makespan(free: list[float], jobs: int, duration: float) -> float:
    """When ``jobs`` equal jobs of ``duration`` end, on slots free at ``free`` (sorted), greedily.

    Greedy list scheduling of equal jobs starts them at the ``jobs`` smallest
    values of ``{f + k * duration}``. Those values fall into levels (``k +
    floor(f / duration)``), each level above the last, so a binary search over
    the levels finds the last start in O(slots log jobs), whatever the number of jobs.

    >>> _makespan([0.0, 0.0], 3, 10.0), _makespan([1.0, 1.0], 1, 10.0), _makespan([0.0], 0, 5.0)
    (20.0, 11.0, 0.0)
    """
    if jobs <= 0 or duration <= 0:
        return free[-1]
    levels = [math.floor(f / duration) for f in free]

    def started_by(level: int) -> int:
        """How many starts lie at or below ``level``."""
        return sum(level - q + 1 for q in levels if q <= level)

    lo, hi = levels[0], levels[0] + jobs - 1  # the first slot alone holds every start by hi
    while lo < hi:
        mid = (lo + hi) // 2
        if started_by(mid) >= jobs:
            hi = mid
        else:
            lo = mid + 1
    rank = jobs - started_by(lo - 1)  # which start within level lo is the last one
    at_level = sorted(f + (lo - q) * duration for f, q in zip(free, levels, strict=True) if q <= lo)
    return max(free[-1], at_level[rank - 1] + duration)
