"""Snapshot: an immutable view of every job, cheap to take and cheap to change.

Built on ``immutables.Map`` (a hash array mapped trie): applying one change
copies O(log n) nodes, not the whole table, so a large snapshot is updated
about as fast as a small one, and old snapshots stay valid for whoever holds them.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, overload

import immutables

from statusbridge.cache._aggregates import (
    EMPTY,
    STATUSES,
    Tally,
    add_job,
    tally_jobs,
)
from statusbridge.cache._summary import BatchSummary, summarize, summary_of
from statusbridge.record import FINISHED, BatchJob, BatchStatus

__all__ = ["BatchSummary", "Snapshot", "summarize"]

_NO_JOBS: immutables.Map[str, BatchJob] = immutables.Map()


def _creation_order(job: BatchJob) -> tuple[float, str]:
    return (job.created_at.timestamp() if job.created_at else 0.0, job.id)


@dataclass(frozen=True)
class _StaleBatch:
    """A batch listing of an earlier snapshot and the ids changed since (newest first)."""

    members: tuple[BatchJob, ...]
    jobs: immutables.Map[str, BatchJob]  # of the snapshot ``members`` belongs to
    changed: tuple[tuple[str, ...], Any]  # (ids, older link or None)
    count: int

    def then(self, edits: Mapping[str, Any]) -> _StaleBatch:
        return _StaleBatch(
            self.members, self.jobs, (tuple(edits), self.changed), self.count + len(edits)
        )

    def worth_patching(self) -> bool:
        """Patching costs a copy and a bisection per change; sorting again, n log n."""
        return self.count <= 4 or self.count * 8 <= len(self.members)

    def patched(self, batch_id: str, jobs: immutables.Map[str, BatchJob]) -> tuple[BatchJob, ...]:
        ids: set[str] = set()
        link: Any = self.changed
        while link is not None:
            ids.update(link[0])
            link = link[1]
        members = list(self.members)
        for job_id in ids:
            before = self.jobs.get(job_id)
            if before is not None and before.batch_id == batch_id:
                del members[bisect_left(members, _creation_order(before), key=_creation_order)]
            now = jobs.get(job_id)
            if now is not None and now.batch_id == batch_id:
                insort(members, now, key=_creation_order)
        return tuple(members)


_RunningIndex = immutables.Map[str | None, immutables.Map[str, BatchJob]]


def _index_running(jobs: Iterable[BatchJob]) -> _RunningIndex:
    groups: dict[str | None, dict[str, BatchJob]] = {}
    for job in jobs:
        if job.status is BatchStatus.RUNNING:
            groups.setdefault(None, {})[job.id] = job
            if job.batch_id is not None:
                groups.setdefault(job.batch_id, {})[job.id] = job
    return immutables.Map({key: immutables.Map(group) for key, group in groups.items()})


def _edit_running(
    index: _RunningIndex, edits: Mapping[str | None, Mapping[str, BatchJob | None]]
) -> _RunningIndex:
    """``index`` with jobs set (a job) or dropped (None), group by group."""
    if not edits:
        return index
    work = index.mutate()
    for key, changes in edits.items():
        group = work.get(key, _NO_JOBS).mutate()
        for job_id, job in changes.items():
            if job is None:
                group.pop(job_id, None)
            else:
                group[job_id] = job
        if len(group):
            work[key] = group.finish()
        else:
            work.pop(key, None)
    return work.finish()


def _first_load(changes: Mapping[str, BatchJob | None], version: int) -> Snapshot:
    """The snapshot holding ``changes``' jobs, built in one pass (a cache's initial load).

    Cheaper than editing an empty snapshot job by job: each trie is built whole
    from a dict, and every job is looked at once (the total tally is the sum of
    the batches' tallies and the loose jobs').
    """
    groups: dict[str, dict[str, BatchJob]] = {}
    loose: list[BatchJob] = []
    active: dict[str, BatchJob] = {}
    running: dict[str | None, dict[str, BatchJob]] = {}
    removals = False
    for job_id, job in changes.items():
        if job is None:
            removals = True
            continue
        batch_id = job.batch_id
        if batch_id is None:
            loose.append(job)
        else:
            groups.setdefault(batch_id, {})[job_id] = job
        status = job.status
        if status not in FINISHED:
            active[job_id] = job
            if status is BatchStatus.RUNNING:
                running.setdefault(None, {})[job_id] = job
                if batch_id is not None:
                    running.setdefault(batch_id, {})[job_id] = job
    tallies = {batch_id: tally_jobs(members.values()) for batch_id, members in groups.items()}
    total = tuple(map(sum, zip(tally_jobs(loose), *tallies.values(), strict=True)))
    # (No copy of a load without removals: peak memory counts at this size.)
    jobs = (
        {k: j for k, j in changes.items() if j is not None}
        if removals
        else cast("Mapping[str, BatchJob]", changes)
    )
    trie = immutables.Map(jobs)
    return Snapshot(
        trie,
        immutables.Map({b: _part_trie(trie, jobs, members) for b, members in groups.items()}),
        version,
        _tallies=(total, immutables.Map(tallies)),
        _running=immutables.Map({k: _part_trie(trie, jobs, g) for k, g in running.items()}),
        _active=_part_trie(trie, jobs, active),
    )


def _part_trie(
    trie: immutables.Map[str, BatchJob], jobs: Mapping[str, BatchJob], part: dict[str, BatchJob]
) -> immutables.Map[str, BatchJob]:
    """The trie of ``part``, some of ``jobs`` (whose trie is ``trie``).

    Building a trie is most of a large load's snapshot, and the parts are often
    most of the jobs (every job active after a batch starts, one batch holding
    them all): the whole trie itself when ``part`` is all of it, the whole trie
    less the rest when that is fewer edits.
    """
    if len(part) == len(jobs):
        return trie
    if len(part) * 2 <= len(jobs):
        return immutables.Map(part)
    work = trie.mutate()
    for job_id in jobs:
        if job_id not in part:
            del work[job_id]
    return work.finish()


class Snapshot(Mapping[str, BatchJob]):
    """Every job at one instant: an immutable ``Mapping[str, BatchJob]``.

    Reading it never touches the disk and never takes a lock. ``version``
    strictly increases from one snapshot of a cache to the next. Summaries and
    batch ids are kept up to date change by change (see ``_aggregates``), so
    asking for them on every render costs the same at any number of jobs.
    """

    __slots__ = (
        "_active",
        "_batches",
        "_jobs",
        "_memo",
        "_running",
        "_tallies",
        "_total",
        "get",
        "version",
    )

    def __init__(
        self,
        jobs: immutables.Map[str, BatchJob] | None = None,
        batches: immutables.Map[str, immutables.Map[str, BatchJob]] | None = None,
        version: int = 0,
        *,
        _tallies: tuple[Tally, immutables.Map[str, Tally]] | None = None,
        _running: _RunningIndex | None = None,
        _active: immutables.Map[str, BatchJob] | None = None,
        _memo: dict[Any, Any] | None = None,
    ) -> None:
        self._jobs: immutables.Map[str, BatchJob] = jobs if jobs is not None else immutables.Map()
        self.get = self._jobs.get  # type: ignore[method-assign]
        self._batches: immutables.Map[str, immutables.Map[str, BatchJob]] = (
            batches if batches is not None else immutables.Map()
        )
        self.version = version
        if _tallies is None:  # built from parts: tally them once
            _tallies = (
                tally_jobs(self._jobs.values()),
                immutables.Map({b: tally_jobs(m.values()) for b, m in self._batches.items()}),
            )
        self._total, self._tallies = _tallies
        if _running is None:  # likewise
            _running = _index_running(self._jobs.values())
        # The running jobs, all (key None) and per batch: what a summary's ETA needs.
        self._running: _RunningIndex = _running
        self._active: immutables.Map[str, BatchJob] = (
            _active
            if _active is not None
            else immutables.Map({k: j for k, j in self._jobs.items() if not j.is_finished})
        )
        # Derived views computed on first use (a race computes one twice,
        # harmlessly); those a change leaves valid are carried to the next snapshot.
        self._memo: dict[Any, Any] = _memo if _memo is not None else {}

    def __getitem__(self, job_id: str) -> BatchJob:
        return self._jobs[job_id]

    if TYPE_CHECKING:
        # At run time ``get`` is the trie's own (C) method, bound per snapshot in
        # __init__: a Python method in front of it cost as much as the lookup.
        @overload
        def get(self, job_id: str, /) -> BatchJob | None: ...
        @overload
        def get(self, job_id: str, default: BatchJob, /) -> BatchJob: ...
        @overload
        def get(self, job_id: str, default: Any, /) -> Any: ...
        def get(self, job_id: str, default: Any = None) -> Any: ...

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

        Costs O(changes x log n): the tries share every untouched node with this
        one, and the tallies are edited by the changed jobs only.
        """
        if not self._jobs:
            return _first_load(changes, self.version + 1)
        jobs = self._jobs.mutate()
        total = list(self._total)
        active = self._active.mutate()
        # Batch index edits, grouped per batch so that each batch's map is mutated
        # once (one set() per job would copy a path per job).
        batch_edits: dict[str, dict[str, BatchJob | None]] = {}
        tally_edits: dict[str, list[int]] = {}
        running_edits: dict[str | None, dict[str, BatchJob | None]] = {}
        tallies = self._tallies

        def tally_of(batch_id: str) -> list[int]:
            work = tally_edits.get(batch_id)
            if work is None:
                work = tally_edits[batch_id] = list(tallies.get(batch_id, EMPTY))
            return work

        for job_id, job in changes.items():
            previous = jobs.get(job_id)
            if previous is not None:
                add_job(total, previous, -1)
                if previous.status is BatchStatus.RUNNING:
                    running_edits.setdefault(None, {})[job_id] = None
                    running_edits.setdefault(previous.batch_id, {})[job_id] = None
                if previous.batch_id is not None:
                    add_job(tally_of(previous.batch_id), previous, -1)
                    if job is None or job.batch_id != previous.batch_id:
                        batch_edits.setdefault(previous.batch_id, {})[job_id] = None
            if job is None or job.is_finished:
                if previous is not None and not previous.is_finished:
                    active.pop(job_id, None)
            else:
                active[job_id] = job
            if job is None:
                jobs.pop(job_id, None)
                continue
            jobs[job_id] = job
            add_job(total, job, 1)
            if job.status is BatchStatus.RUNNING:
                running_edits.setdefault(None, {})[job_id] = job
                running_edits.setdefault(job.batch_id, {})[job_id] = job
            if job.batch_id is not None:
                add_job(tally_of(job.batch_id), job, 1)
                batch_edits.setdefault(job.batch_id, {})[job_id] = job
        batches = self._batches.mutate()
        new_tallies = tallies.mutate()
        batch_set_changed = False
        for batch_id, edits in batch_edits.items():
            before = batches.get(batch_id)
            members = (before or immutables.Map()).mutate()
            for job_id, member in edits.items():
                if member is None:
                    members.pop(job_id, None)
                else:
                    members[job_id] = member
            if len(members):
                batches[batch_id] = members.finish()
                new_tallies[batch_id] = tuple(tally_edits[batch_id])
                batch_set_changed = batch_set_changed or before is None
            else:
                batches.pop(batch_id, None)
                new_tallies.pop(batch_id, None)
                batch_set_changed = batch_set_changed or before is not None
        return Snapshot(
            jobs.finish(),
            batches.finish(),
            self.version + 1,
            _tallies=(tuple(total), new_tallies.finish()),
            _running=_edit_running(self._running, running_edits),
            _active=active.finish(),
            _memo=self._carried_memo(batch_edits, batch_set_changed),
        )

    def _carried_memo(
        self, batch_edits: Mapping[str, Mapping[str, BatchJob | None]], batch_set_changed: bool
    ) -> dict[Any, Any]:
        """The derived views of this snapshot that stay true (or can be patched) after these edits.

        A batch listing the edits touch is not rebuilt here: the next snapshot
        gets the listing and the ids changed since, and patches it only if asked.
        """
        carried: dict[Any, Any] = {}
        memo = self._memo.copy()  # copy(): atomic against readers filling it meanwhile
        for key, value in memo.items():
            kind = key[0]
            if kind == "batch_ids":
                if not batch_set_changed:
                    carried[key] = value
            elif kind in ("batch", "stale batch"):
                edits = batch_edits.get(key[1])
                if edits is None:
                    carried[key] = value
                elif kind == "batch":
                    stale = _StaleBatch(value, self._jobs, (tuple(edits), None), len(edits))
                    if stale.worth_patching():
                        carried["stale batch", key[1]] = stale
                elif ("batch", key[1]) not in memo and value.then(edits).worth_patching():
                    carried[key] = value.then(edits)
            elif kind == "summary" and key[1] is not None and key[1] not in batch_edits:
                carried[key] = value
        return carried

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
            stale = self._memo.get(("stale batch", batch_id))
            if stale is not None:
                self._memo[key] = stale.patched(batch_id, self._jobs)
            else:
                members = self._batches.get(batch_id)
                self._memo[key] = (
                    tuple(sorted(members.values(), key=_creation_order)) if members else ()
                )
        result: tuple[BatchJob, ...] = self._memo[key]
        return result

    def active(self) -> Mapping[str, BatchJob]:
        """The pending and running jobs, by id: what a monitor lists without walking
        every finished record (kept as changes are applied, like the summaries)."""
        return self._active

    def tally(self, batch_id: str | None = None) -> Tally:
        """The raw counts behind ``summary`` (see ``statusbridge.cache._aggregates``)."""
        return self._total if batch_id is None else self._tallies.get(batch_id, EMPTY)

    def summary_with(
        self,
        batch_id: str,
        newer: Iterable[BatchJob] = (),
        *,
        pending_extra: int = 0,
        name: str | None = None,
    ) -> BatchSummary:
        """``summary(batch_id)`` with ``newer`` records in place of this snapshot's.

        For a writer that knows records the cache has not shown yet
        (read-your-writes), and jobs with no record yet (``pending_extra``,
        counted as pending). Costs O(len(newer)).
        """
        work = list(self.tally(batch_id))
        running = self._running.get(batch_id, _NO_JOBS).mutate()
        for job in newer:
            cached = self._jobs.get(job.id)
            if cached is not None and cached.batch_id == batch_id:
                add_job(work, cached, -1)
                running.pop(job.id, None)
            if job.batch_id == batch_id:
                add_job(work, job, 1)
                if job.status is BatchStatus.RUNNING:
                    running[job.id] = job
        work[STATUSES.index(BatchStatus.PENDING)] += pending_extra
        return summary_of(tuple(work), running.finish(), batch_id=batch_id, name=name)

    def summary(self, batch_id: str | None = None) -> BatchSummary:
        """Counts per status and overall progress, of one batch or of every job."""
        key = ("summary", batch_id)
        if key not in self._memo:
            self._memo[key] = summary_of(
                self.tally(batch_id),
                self._running.get(batch_id, _NO_JOBS),
                batch_id=batch_id,
            )
        result: BatchSummary = self._memo[key]
        return result
