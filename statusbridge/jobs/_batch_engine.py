"""The batch engine behind one or more ``BatchManager`` handles: definitions and a queue.

A batch starts once: the start is claimed with a compare-and-swap on the stored
definition, so of several threads, managers or processes starting it, exactly
one submits its jobs (in the background: ``BatchQueue.submit_batch``).

Retention never makes a batch lie: the records of a started batch are kept
until its final counts are saved with its definition, and from then on its
summary comes from there. The counts are saved by ``save_finished``, called
when the queue goes idle, when the engine starts, and before each retention
pass (``BatchQueue.add_retention_hook`` only asks which batches to keep).
Relies on the queue's public methods only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from statusbridge.cache import BatchSummary, Snapshot
from statusbridge.cache._snapshot import summarize
from statusbridge.errors import UnknownJobError
from statusbridge.jobs._definition import (
    BatchDefinition,
    FinalCounts,
    cancelled_by_marker,
    new_batch_id,
    refuse_if_started,
    settled,
)
from statusbridge.jobs._definitions import Definitions
from statusbridge.jobs._fits import check_records_fit
from statusbridge.jobs._overlay import QueueView
from statusbridge.jobs._queue import BatchQueue
from statusbridge.jobs._unrecorded import cancel_unrecorded
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._frozen import freeze
from statusbridge.store._shelf import Shelf

__all__ = ["BatchEngine"]

logger = logging.getLogger(__name__)


def _nothing(engine: BatchEngine) -> None:
    """No registry watches this engine."""


class BatchEngine:
    """Batch definitions and the queue that runs their jobs."""

    def __init__(
        self,
        shelf: Shelf,
        queue: BatchQueue,
        retention_hours: float | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.defs = Definitions(shelf)
        self.shelf = shelf
        self.queue = queue
        self.retention_hours = retention_hours
        self._clock = clock
        self.handles = 0  # managers using it (see ``_engines``)
        self.key: Hashable | None = None
        # Called once the queue is idle and finished batches are saved (``_engines``).
        self.when_idle: Callable[[BatchEngine], None] = _nothing
        self.save_finished()  # batches that ended while no manager watched
        self.remove_old_batches()
        queue.add_retention_hook(self._protected, settle=self.save_finished_in)
        queue.add_idle_hook(self._on_idle)
        queue.add_cancel_hook(self._cancel_unrecorded)

    # -- the seed API ----------------------------------------------------------
    def create(self, jobs: list[dict[str, Any]], name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a batch needs a non-empty name")
        if not isinstance(jobs, (list, tuple)):
            raise TypeError(f"jobs must be a list of params, not {type(jobs).__name__}")
        params = tuple(freeze(p, _path=f"jobs[{i}]") for i, p in enumerate(jobs))
        now = self._clock()
        for _ in range(5):
            batch_id = new_batch_id(now)
            definition = BatchDefinition(
                id=batch_id,
                name=name,
                job_ids=tuple(f"{batch_id}-{i:04d}" for i in range(len(params))),
                params=params,
                created_at=now,
            )
            self._check_fits(definition)
            try:
                self.defs.store(definition, exclusive=True)  # never overwrites another batch
            except FileExistsError:
                continue  # 64 random bits collided: astronomically rare, but never silent
            return batch_id
        raise RuntimeError("could not find a free batch id (is the batch folder shared oddly?)")

    def _check_fits(self, definition: BatchDefinition) -> None:
        check_records_fit(
            definition.job_ids,
            definition.params,
            batch_id=definition.id,
            definition_bytes=len(self.defs.encode(definition)),
            max_bytes=self.queue.max_record_bytes,
            now=self._clock(),
        )

    def start(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        # Fresh from the shelf: the cached copy may predate another process's start.
        found = self.defs.fresh(batch_id)
        if found is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r}")
        definition = found[1]
        self.defs.remember(definition)
        refuse_if_started(definition)
        # All or nothing: everything that can refuse the batch is checked before
        # the definition says "started".
        self.queue.check_submittable(generator_func)
        self._check_fits(definition)  # a definition saved by an older version, or by hand
        busy = [
            j
            for j in definition.job_ids
            if (job := self.queue.get_job_status(j)) is not None and not job.is_finished
        ]
        if busy:
            # Most likely another starter claimed the batch after our read: say so.
            found = self.defs.fresh(batch_id)
            if found is not None:
                refuse_if_started(found[1])
            raise ValueError(f"batch {batch_id!r}: its job {busy[0]!r} is already running")
        started_at = self._clock()

        def claim(current: BatchDefinition) -> BatchDefinition:
            refuse_if_started(current)
            return replace(current, started_at=started_at)

        # The claim is one compare-and-swap: of several starters (threads,
        # managers, processes) exactly one wins; the others raise before they
        # touch any job record.
        claimed = self.defs.change(batch_id, claim)
        if claimed is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r} (removed meanwhile)")
        # The definition names every job: from here on others can see and cancel
        # them. Their records and the pool get them in the background.
        self.queue.submit_batch(
            generator_func,
            tuple(zip(claimed.job_ids, claimed.params, strict=True)),
            batch_id=batch_id,
            stop=partial(self.defs.cancel_marked, batch_id),
        )

    def _cancel_unrecorded(self, job_id: str) -> bool:
        return cancel_unrecorded(self.queue.store, self.defs, job_id)

    def status(self, batch_id: str, seen: QueueView | None = None) -> BatchSummary | None:
        """The batch's summary; ``seen``: the queue's view, when the caller has it already."""
        definition = self.defs.lookup(batch_id)
        if definition is None:
            return None
        if definition.started_at is None:
            seen = seen if seen is not None else self.queue.view()
            if seen.has_records(batch_id):
                # Records of a batch this engine holds unstarted: another manager or
                # process started it since we read its definition.
                definition = self.defs.reread(definition)
        final = definition.summary()
        if final is not None:
            return final
        summary = self._live_summary(definition, seen)
        if definition.started_at is None and summary.total:
            return BatchSummary(
                batch_id, definition.name, summary.total, summary.counts, 0.0, "created"
            )
        return summary

    def _live_summary(self, definition: BatchDefinition, seen: QueueView | None) -> BatchSummary:
        """From the snapshot's counts for the batch: O(records not cached yet), not O(jobs).

        Jobs with no record count as pending, as ``job()`` says of each; a batch
        whose id other jobs also use is summarised job by job.
        """
        seen = seen if seen is not None else self.queue.view()
        snapshot = seen.snapshot
        batch_id = definition.id
        newer = seen.newer_of(batch_id)
        summary = snapshot.summary_with(batch_id, newer, name=definition.name)
        missing = len(definition.job_ids) - summary.total
        if missing < 0:
            jobs = [self.job(job_id, definition) for job_id in definition.job_ids]
            return summarize(jobs, batch_id=batch_id, name=definition.name)
        if missing:
            self._reread_if_trimmed(definition)
            summary = snapshot.summary_with(
                batch_id, newer, pending_extra=missing, name=definition.name
            )
        return summary

    def job(self, job_id: str, definition: BatchDefinition) -> BatchJob:
        job = self.queue.get_job_status(job_id)
        if job is not None:
            return job
        self._reread_if_trimmed(definition)
        return BatchJob(job_id, BatchStatus.PENDING, batch_id=definition.id)

    def _reread_if_trimmed(self, definition: BatchDefinition) -> None:
        """A started batch's record is gone: has another process saved the final
        counts (and trimmed the records) meanwhile?"""
        if definition.started_at is not None and definition.final is None:
            self.defs.reread(definition)

    def jobs(self, batch_id: str) -> tuple[BatchJob, ...]:
        """Each job's record; a job without one is PENDING, or left out once the batch has
        finished (retention removed it after the final counts were saved)."""
        definition = self.defs.definition(batch_id)
        found: list[BatchJob] = []
        fresh = False
        for job_id in definition.job_ids:
            job = self.queue.get_job_status(job_id)
            if job is None and not fresh and definition.started_at and definition.final is None:
                # Has another process saved the final counts (and trimmed) meanwhile?
                fresh = True
                definition = self.defs.read(batch_id) or definition
                self.defs.remember(definition)
            if job is None and definition.final is not None:
                continue
            found.append(job or BatchJob(job_id, BatchStatus.PENDING, batch_id=batch_id))
        return tuple(found)

    def cancel(self, batch_id: str) -> int:
        """Set the batch's cancel marker, then cancel each job that has a record.

        A started batch's job without a record counts as cancelled: whoever feeds
        the batch checks the marker before it runs a job (see ``_batch_feed``), and
        records it CANCELLED instead.
        """
        definition = self.defs.definition(batch_id)
        if definition.final is not None:
            return 0
        unfed = self.queue.stop_feed(batch_id)  # this process's feed of it, if any
        now = self._clock()
        marked = self.defs.mark_cancelled(batch_id, now)
        if marked is not None:
            definition = marked
        # Jobs the feed cancelled on seeing our marker count too (not a later cancel's).
        ours = definition.cancelled_at == now and definition.final is None
        count = 0
        for job_id in definition.job_ids:
            if self.queue.cancel(job_id) or job_id in unfed:
                count += 1
            elif ours:
                # Recorded CANCELLED on seeing our marker (by the feed, or by a worker
                # about to take it from memory), or not fed yet: the feed records it so.
                job = self.queue.read(job_id)
                count += job is None or cancelled_by_marker(job, now)
        return count

    def summaries(self) -> list[BatchSummary]:
        self.defs.relist()
        definitions = sorted(self.defs.all(), key=lambda d: d.created_at, reverse=True)
        seen = self.queue.view()
        return [s for d in definitions if (s := self.status(d.id, seen)) is not None]

    def definitions(self) -> Mapping[str, BatchDefinition]:
        self.defs.relist()
        return {d.id: d for d in self.defs.all()}

    # -- housekeeping (on the queue's supervisor thread) -------------------------
    def _protected(self, snapshot: Snapshot) -> set[str]:
        """The batches whose records retention keeps: started, final counts not saved."""
        return {d.id for d in self.defs.all() if d.final is None and d.started_at is not None}

    def save_finished_in(self, snapshot: Snapshot) -> list[str]:
        """Save the final counts of the batches ``snapshot`` shows finished; the queue
        calls this before each retention pass, which then keeps only unsaved batches."""
        saved: list[str] = []
        for cached in [d for d in self.defs.all() if d.final is None]:
            definition = cached
            if cached.started_at is None:
                if not snapshot.summary(cached.id).total:
                    continue  # no record of it to trim
                # Records of a batch this engine holds unstarted: another manager or
                # process started it; its counts must be saved before they go.
                definition = self.defs.reread(cached)
                if definition.started_at is None or definition.final is not None:
                    continue
            counted = snapshot.summary(definition.id)
            if counted.total <= len(definition.job_ids) and not (
                counted.total == len(definition.job_ids) and counted.is_done
            ):
                continue  # a job unfinished or without a record: O(1), from the counts
            jobs = [snapshot.get(j) for j in definition.job_ids]
            if not all(j is not None and j.is_finished for j in jobs):
                continue
            summary = summarize([j for j in jobs if j is not None], batch_id=definition.id)
            if self._save_final(definition, summary):
                saved.append(definition.id)
        return saved

    def save_finished(self) -> list[str]:
        """Save the final counts of every started batch whose jobs have all finished.

        Retention does it just before it trims; this runs whenever the queue goes
        idle and when the engine starts too, so a finished batch's definition says
        how it ended even when its records are later removed by something that
        does not know the batches (``statusbridge cleanup``, another program).
        Judged on what this process knows (the cache and its own newer records);
        a job without a record counts as unfinished. Returns the batches settled.
        """
        open_batches = [d for d in self.defs.all() if d.final is None and d.started_at is not None]
        if not open_batches:
            return []
        seen = self.queue.view()
        return [
            definition.id
            for definition in open_batches
            if (summary := self._live_summary(definition, seen)).is_done
            and summary.total == len(definition.job_ids)
            and self._save_final(definition, summary)
        ]

    def _save_final(self, definition: BatchDefinition, summary: BatchSummary) -> bool:
        """False if the counts could not be saved (the batch's records must stay)."""
        final = FinalCounts(summary.counts, summary.progress, summary.state, self._clock())
        try:
            # A compare-and-swap, like a start: never over another writer's change,
            # and never bringing back a definition removed meanwhile.
            if self.defs.change(definition.id, settled(final)) is None:
                logger.info("batch %s: its definition was removed meanwhile", definition.id)
                self.defs.forget(definition.id)
        except OSError:
            logger.exception("batch %s: cannot save its final counts", definition.id)
            return False
        return True

    def _on_idle(self) -> None:
        self.save_finished()
        self.when_idle(self)

    def remove_old_batches(self, now: datetime | None = None) -> list[str]:
        """Remove batch files older than ``retention_hours`` whose jobs are all finished."""
        if self.retention_hours is None:
            return []
        now = now or self._clock()
        cutoff = now - timedelta(hours=self.retention_hours)
        removed = []
        candidates = [d for d in self.defs.all() if d.created_at < cutoff]
        for d in candidates:
            if d.final is None:
                # Records already removed by retention count as finished.
                jobs = (self.queue.get_job_status(job_id) for job_id in d.job_ids)
                if d.started_at is None or any(j is not None and not j.is_finished for j in jobs):
                    continue
            # No compare-and-swap needed: only a started batch whose jobs are all
            # finished is removed, a start refuses a started batch, and a final-counts
            # save racing with this removal finds nothing to change (or is removed after).
            self.shelf.remove(d.id)
            self.defs.forget(d.id)
            removed.append(d.id)
        return removed
