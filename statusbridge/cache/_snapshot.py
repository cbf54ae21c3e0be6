"""Snapshot: an immutable view of every job, cheap to take and cheap to change.

Built on ``immutables.Map`` (a hash array mapped trie): applying one change
copies O(log n) nodes, not the whole table, so a snapshot of 100,000 jobs is
updated as fast as one of 100, and old snapshots stay valid for whoever holds them.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, overload

import immutables

from statusbridge.record import BatchJob, BatchStatus

__all__ = ["BatchSummary", "Snapshot", "summarize"]

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

    @property
    def finished(self) -> int:
        c = self.counts
        return c[BatchStatus.COMPLETED] + c[BatchStatus.FAILED] + c[BatchStatus.CANCELLED]

    @property
    def is_done(self) -> bool:
        """True when no job is pending or running (also for an empty group)."""
        return self.finished == self.total

    def __str__(self) -> str:
        """One line for logs and terminals: ``Test: running 55% (2 running, 2 completed)``."""
        parts = ", ".join(f"{n} {s.value}" for s, n in self.counts.items() if n)
        label = self.name or self.id or "all jobs"
        # Rounded down: "100%" only once every job has finished.
        pct = math.floor(self.progress * 100) if not self.is_done else round(self.progress * 100)
        return f"{label}: {self.state} {pct}% ({parts or 'no jobs'})"

    def with_name(self, name: str | None) -> BatchSummary:
        return BatchSummary(self.id, name, self.total, self.counts, self.progress, self.state)


def summarize(
    jobs: Iterable[BatchJob], *, batch_id: str | None = None, name: str | None = None
) -> BatchSummary:
    """Summarise ``jobs``: finished jobs count as progress 1.0, pending as 0.0.

    >>> jobs = [BatchJob("a", BatchStatus.COMPLETED), BatchJob("b", "running", progress=0.5)]
    >>> s = summarize(jobs)
    >>> s.total, s.progress, s.state
    (2, 0.75, 'running')
    """
    counts = dict.fromkeys(BatchStatus, 0)
    total = 0
    done = 0.0
    for job in jobs:
        total += 1
        status = job.status
        counts[status] += 1
        if status is BatchStatus.RUNNING:
            done += job.progress or 0.0
        elif status is not BatchStatus.PENDING:
            done += 1.0
    if total == 0:
        state = "empty"
    elif counts[BatchStatus.PENDING] == total:
        state = "pending"
    elif counts[BatchStatus.PENDING] + counts[BatchStatus.RUNNING]:
        state = "running"
    elif counts[BatchStatus.CANCELLED]:
        state = "cancelled"
    elif counts[BatchStatus.FAILED]:
        state = "failed"
    else:
        state = "completed"
    return BatchSummary(
        id=batch_id,
        name=name,
        total=total,
        counts=MappingProxyType(counts),
        progress=done / total if total else 0.0,
        state=state,
    )


def _creation_order(job: BatchJob) -> tuple[float, str]:
    return (job.created_at.timestamp() if job.created_at else 0.0, job.id)


class Snapshot(Mapping[str, BatchJob]):
    """Every job at one instant: an immutable ``Mapping[str, BatchJob]``.

    Reading it never touches the disk and never takes a lock. ``version``
    strictly increases from one snapshot of a cache to the next.
    """

    __slots__ = ("_batches", "_jobs", "_memo", "version")

    def __init__(
        self,
        jobs: immutables.Map[str, BatchJob] | None = None,
        batches: immutables.Map[str, immutables.Map[str, BatchJob]] | None = None,
        version: int = 0,
    ) -> None:
        self._jobs: immutables.Map[str, BatchJob] = jobs if jobs is not None else immutables.Map()
        self._batches: immutables.Map[str, immutables.Map[str, BatchJob]] = (
            batches if batches is not None else immutables.Map()
        )
        self.version = version
        # Derived views computed on first use; a race computes one twice, harmlessly.
        self._memo: dict[Any, Any] = {}

    def __getitem__(self, job_id: str) -> BatchJob:
        return self._jobs[job_id]

    @overload
    def get(self, job_id: str, /) -> BatchJob | None: ...
    @overload
    def get(self, job_id: str, default: BatchJob, /) -> BatchJob: ...
    @overload
    def get(self, job_id: str, default: Any, /) -> Any: ...
    def get(self, job_id: str, default: Any = None) -> Any:
        return self._jobs.get(job_id, default)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    # The Mapping mixins would look every key up again; the trie iterates natively.
    def keys(self) -> KeysView[str]:
        return self._jobs.keys()  # type: ignore[return-value]

    def values(self) -> ValuesView[BatchJob]:
        return self._jobs.values()  # type: ignore[return-value]

    def items(self) -> ItemsView[str, BatchJob]:
        return self._jobs.items()  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<Snapshot version={self.version} jobs={len(self._jobs)}>"

    def with_changes(self, changes: Mapping[str, BatchJob | None]) -> Snapshot:
        """The next snapshot: these jobs set (or removed, for None), version + 1.

        Costs O(changes x log n): the tries share every untouched node with this one.
        """
        jobs = self._jobs.mutate()
        # Batch index edits, grouped per batch so that each batch's map is mutated
        # once (one set() per job would copy a path per job).
        batch_edits: dict[str, dict[str, BatchJob | None]] = {}
        for job_id, job in changes.items():
            previous = jobs.get(job_id)
            if (
                previous is not None
                and previous.batch_id is not None
                and (job is None or job.batch_id != previous.batch_id)
            ):
                batch_edits.setdefault(previous.batch_id, {})[job_id] = None
            if job is None:
                jobs.pop(job_id, None)
                continue
            jobs[job_id] = job
            if job.batch_id is not None:
                batch_edits.setdefault(job.batch_id, {})[job_id] = job
        batches = self._batches.mutate()
        for batch_id, edits in batch_edits.items():
            members = (batches.get(batch_id) or immutables.Map()).mutate()
            for job_id, member in edits.items():
                if member is None:
                    members.pop(job_id, None)
                else:
                    members[job_id] = member
            if len(members):
                batches[batch_id] = members.finish()
            else:
                batches.pop(batch_id, None)
        return Snapshot(jobs.finish(), batches.finish(), self.version + 1)

    def batch_ids(self) -> tuple[str, ...]:
        """Ids of the batches that have at least one job, sorted."""
        key = ("batch_ids",)
        if key not in self._memo:
            self._memo[key] = tuple(sorted(self._batches.keys()))
        result: tuple[str, ...] = self._memo[key]
        return result

    def batch(self, batch_id: str) -> tuple[BatchJob, ...]:
        """The jobs of one batch, oldest first (by ``created_at``, then id)."""
        key = ("batch", batch_id)
        if key not in self._memo:
            members = self._batches.get(batch_id)
            self._memo[key] = (
                tuple(sorted(members.values(), key=_creation_order)) if members else ()
            )
        result: tuple[BatchJob, ...] = self._memo[key]
        return result

    def summary(self, batch_id: str | None = None) -> BatchSummary:
        """Counts per status and overall progress, of one batch or of every job."""
        key = ("summary", batch_id)
        if key not in self._memo:
            members = self._jobs.values() if batch_id is None else self.batch(batch_id)
            self._memo[key] = summarize(members, batch_id=batch_id)
        result: BatchSummary = self._memo[key]
        return result
