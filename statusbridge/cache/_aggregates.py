"""Per-status counts and summed progress of a group of jobs, kept as changes arrive.

A ``Tally`` is what a summary needs, as a plain tuple: the count of each status
and the group's done work. Adding or removing one job costs O(1), so a
snapshot keeps one tally for all jobs and one per batch, and summaries cost
the same whatever the number of jobs.

Done work is summed exactly, in integer units of 2**-1074 (every float in
0..1 is a whole number of them): adding and removing the same job any number
of times leaves no rounding residue, and the incremental tally always equals
one computed from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable

from statusbridge.record import BatchJob, BatchStatus

__all__ = [
    "EMPTY",
    "STATUSES",
    "Tally",
    "add_job",
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

_BITS = 1074  # the smallest positive float is 2**-1074
_ONE = 1 << _BITS

# (count per status in STATUSES order..., done work in units of 2**-1074)
Tally = tuple[int, ...]
EMPTY: Tally = (0,) * (_UNITS + 1)


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


def tally_jobs(jobs: Iterable[BatchJob]) -> Tally:
    """The tally of ``jobs``, from scratch."""
    work = list(EMPTY)
    for job in jobs:
        add_job(work, job, 1)
    return tuple(work)


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
