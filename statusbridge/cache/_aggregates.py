"""Per-status counts and summed progress of a group of jobs, kept as changes arrive.

A ``Tally`` is what a summary needs, as a plain tuple: the count of each status,
the group's done work, and (for the ETA) the summed run time of the finished
jobs that have both a start and an end, with their number. Adding or removing
one job costs O(1), so a snapshot keeps one tally for all jobs and one per batch, and summaries cost
the same whatever the number of jobs.

Done work is summed exactly, in integer units of 2**-1074 (every float in
0..1 is a whole number of them): adding and removing the same job any number
of times leaves no rounding residue, and the incremental tally always equals
one computed from scratch. Run times are summed in whole microseconds, exact
for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from statusbridge.record import BatchJob, BatchStatus

__all__ = [
    "EMPTY",
    "STATUSES",
    "Tally",
    "add_job",
    "finished_run_time",
    "is_open",
    "progress_of",
    "state_of",
    "tally_jobs",
]

STATUSES: tuple[BatchStatus, ...] = tuple(BatchStatus)
_INDEX = {status: i for i, status in enumerate(STATUSES)}
_PENDING = _INDEX[BatchStatus.PENDING]
_RUNNING = _INDEX[BatchStatus.RUNNING]
_FAILED = _INDEX[BatchStatus.FAILED]
_CANCELLED = _INDEX[BatchStatus.CANCELLED]
_UNITS = len(STATUSES)  # index of the done-work sum in a tally
_SPAN = _UNITS + 1  # summed started -> completed microseconds of finished jobs
_TIMED = _UNITS + 2  # how many finished jobs that sum counts

_BITS = 1074  # the smallest positive float is 2**-1074
_ONE = 1 << _BITS

# (count per status in STATUSES order..., done work in units of 2**-1074,
#  finished run time in microseconds, finished jobs with a run time)
Tally = tuple[int, ...]
EMPTY: Tally = (0,) * (_UNITS + 3)


def _done_units(job: BatchJob) -> int:
    """The job's done work: finished 1, running its progress, pending 0."""
    status = job.status
    if status is BatchStatus.PENDING:
        return 0
    if status is not BatchStatus.RUNNING:
        return _ONE
    progress = job.progress
    if not progress:
        return 0
    numerator, denominator = float(progress).as_integer_ratio()
    return numerator << (_BITS + 1 - denominator.bit_length())


def add_job(work: list[int], job: BatchJob, sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) ``job`` in a tally being edited as a list."""
    work[_INDEX[job.status]] += sign
    units = _done_units(job)
    if units:
        work[_UNITS] += sign * units
    if job.is_finished and job.started_at is not None and job.completed_at is not None:
        span = job.completed_at - job.started_at
        work[_SPAN] += sign * ((span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds)
        work[_TIMED] += sign


def tally_jobs(jobs: Iterable[BatchJob]) -> Tally:
    """The tally of ``jobs``, from scratch."""
    work = list(EMPTY)
    for job in jobs:
        add_job(work, job, 1)
    return tuple(work)


def finished_run_time(tally: Tally) -> tuple[float, int]:
    """Summed started -> completed seconds of the finished jobs that have both, and their count."""
    return max(0.0, tally[_SPAN] / 1_000_000), tally[_TIMED]


def progress_of(tally: Tally) -> float:
    """Mean progress, correctly rounded (int / int division is exact in Python)."""
    total = sum(tally[:_UNITS])
    return tally[_UNITS] / (total << _BITS) if total else 0.0


def state_of(tally: Tally) -> str:
    """The state word of a summary: empty, pending, running, or how the group ended."""
    total = sum(tally[:_UNITS])
    if total == 0:
        return "empty"
    if tally[_PENDING] == total:
        return "pending"
    if tally[_PENDING] + tally[_RUNNING]:
        return "running"
    if tally[_CANCELLED]:
        return "cancelled"
    if tally[_FAILED]:
        return "failed"
    return "completed"


def is_open(tally: Tally) -> bool:
    """True while some job of the group is pending or running."""
    return bool(tally[_PENDING] or tally[_RUNNING])
