"""BatchManager: named batches of jobs, with the seed application's API.

A batch definition (name, the jobs' params, when it was created and started,
and, once it has finished, its final counts) is saved atomically as
``<batch_dir>/<batch_id>.json`` (or, when the status location is a URL and no
``batch_dir`` is given, on the same server); the jobs' status lives with any
other job's.

A batch starts once: the start is claimed with a compare-and-swap on the
stored definition, so of several threads, managers or processes starting it,
exactly one submits its jobs. Every later change of a definition (the final
counts) goes through the same compare-and-swap and never loses another's.

Retention never makes a batch lie: the records of a started batch are kept
until its final counts are saved with its definition, and from then on its
summary comes from there.

Managers built again and again for the same locations (a Streamlit script runs
``manager = BatchManager()`` on every rerun) share one engine per process: one
queue, one cache, one pool. The engine is released when the last manager using
it is shut down or collected and its jobs are done.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from statusbridge.cache import BatchSummary, Snapshot, StatusCache
from statusbridge.cache._snapshot import summarize
from statusbridge.errors import StatusBridgeError, UnknownJobError
from statusbridge.jobs._batch_feed import CANCELLED_BY_BATCH
from statusbridge.jobs._fits import check_records_fit
from statusbridge.jobs._options import check_queue_options
from statusbridge.jobs._queue import BatchQueue
from statusbridge.record import JOB_ID_PATTERN, BatchJob, BatchStatus, validate_job_id
from statusbridge.record._frozen import freeze, thaw
from statusbridge.record._model import utc_now
from statusbridge.store._location import is_url
from statusbridge.store._shelf import Shelf, open_shelf

__all__ = ["BatchDefinition", "BatchManager", "FinalCounts"]

logger = logging.getLogger(__name__)

# How often, at most, list_batches() lists the batch folder for batches that
# other processes created (one listdir; everything else is in memory).
RELIST_SECONDS = 1.0

# How many times a definition is read again when other writers keep changing it
# between our read and our compare-and-swap (each retry means one of them won).
CHANGE_TRIES = 100


@dataclass(frozen=True)
class FinalCounts:
    """How a finished batch ended: saved with its definition before retention may trim it."""

    counts: Mapping[BatchStatus, int]
    progress: float
    state: str
    finished_at: datetime

    def to_doc(self) -> dict[str, Any]:
        return {
            "counts": {s.value: n for s, n in self.counts.items()},
            "progress": self.progress,
            "state": self.state,
            "finished_at": self.finished_at.isoformat(),
        }

    @classmethod
    def from_doc(cls, doc: Any) -> FinalCounts:
        if not isinstance(doc, dict):
            raise TypeError("final must be an object")
        counts = {BatchStatus(k): int(v) for k, v in doc["counts"].items()}
        return cls(
            counts={s: counts.get(s, 0) for s in BatchStatus},
            progress=float(doc["progress"]),
            state=str(doc["state"]),
            finished_at=_aware(doc["finished_at"], "final.finished_at"),
        )


def _aware(text: Any, field: str) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"{field} must be an ISO-8601 string")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} {text!r} has no UTC offset")
    return value


@dataclass(frozen=True)
class BatchDefinition:
    """What a batch is: its jobs' ids and params, its name and times, and how it ended."""

    id: str
    name: str
    job_ids: tuple[str, ...]
    params: tuple[Any, ...]
    created_at: datetime
    started_at: datetime | None = None
    final: FinalCounts | None = None
    cancelled_at: datetime | None = None  # the batch-level cancel marker (``cancel_batch``)

    def to_json(self) -> bytes:
        doc = {
            "schema": 1,
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "jobs": [
                {"id": j, "params": thaw(p)} for j, p in zip(self.job_ids, self.params, strict=True)
            ],
        }
        if self.cancelled_at is not None:
            doc["cancelled_at"] = self.cancelled_at.isoformat()
        if self.final is not None:
            doc["final"] = self.final.to_doc()
        return json.dumps(doc, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> BatchDefinition:
        """Decode a definition; ValueError/KeyError/TypeError say what is wrong."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("schema") != 1:
            raise ValueError("not a schema-1 batch definition")
        jobs = doc["jobs"]
        if not isinstance(jobs, list):
            raise TypeError("jobs must be a list")
        started = doc.get("started_at")
        cancelled = doc.get("cancelled_at")
        final = doc.get("final")
        return cls(
            id=validate_job_id(doc["id"]),
            name=str(doc["name"]),
            job_ids=tuple(validate_job_id(j["id"]) for j in jobs),
            params=tuple(freeze(j.get("params")) for j in jobs),
            created_at=_aware(doc["created_at"], "created_at"),
            started_at=_aware(started, "started_at") if started else None,
            final=FinalCounts.from_doc(final) if final is not None else None,
            cancelled_at=_aware(cancelled, "cancelled_at") if cancelled else None,
        )

    def summary(self) -> BatchSummary | None:
        """The saved final summary, None while the batch has not finished."""
        if self.final is None:
            return None
        f = self.final
        return BatchSummary(self.id, self.name, len(self.job_ids), f.counts, f.progress, f.state)


def _refuse_if_started(definition: BatchDefinition) -> None:
    if definition.started_at is not None:
        raise ValueError(f"batch {definition.id!r} was already started at {definition.started_at}")


def _settled(final: FinalCounts) -> Callable[[BatchDefinition], BatchDefinition | None]:
    """The change that saves ``final``, unless another process saved its counts first."""
    return lambda current: None if current.final is not None else replace(current, final=final)


def _marked_cancelled(current: BatchDefinition, now: datetime) -> BatchDefinition | None:
    """The change that sets the cancel marker of a started, unfinished batch (else None)."""
    if current.started_at is None or current.final is not None or current.cancelled_at:
        return None
    return replace(current, cancelled_at=now)


def _cancelled_by_marker(job: BatchJob, marked_at: datetime) -> bool:
    return (
        job.status is BatchStatus.CANCELLED
        and job.message == CANCELLED_BY_BATCH
        and job.updated_at is not None
        and job.updated_at >= marked_at
    )


def _has_records(batch_id: str, seen: tuple[Snapshot, list[BatchJob]]) -> bool:
    snapshot, unseen = seen
    return bool(snapshot.summary(batch_id).total) or any(j.batch_id == batch_id for j in unseen)


def is_valid_job_id(text: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(text) is not None


def new_batch_id(now: datetime) -> str:
    """Sortable by creation time, unique across processes and hosts (64 random bits)."""
    return f"batch-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"


class _Batches:
    """The engine behind one or more ``BatchManager`` handles: definitions + a queue."""

    def __init__(
        self,
        shelf: Shelf,
        queue: BatchQueue,
        retention_hours: float | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.shelf = shelf
        self.queue = queue
        self.retention_hours = retention_hours
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, BatchDefinition] = {}
        self._missing: dict[str, float] = {}  # ids looked for and not found, when
        self._reread_at: dict[str, float] = {}  # batches whose cached copy may lag, when re-read
        self._listed_at = 0.0
        self.handles = 0
        self.key: Hashable | None = None
        self._relist(force=True)
        self.save_finished()  # batches that ended while no manager watched
        self.remove_old_batches()
        queue.add_retention_hook(self._before_retention)
        queue.add_idle_hook(self._on_idle)

    # -- definitions on disk ---------------------------------------------------
    @property
    def batch_dir(self) -> Path:
        """The folder of the definitions (the status URL's text when they live on a server)."""
        return Path(self.shelf.label)

    def _decode(self, batch_id: str, data: bytes) -> BatchDefinition | None:
        where = f"{self.shelf.label}: {batch_id}.json"
        try:
            definition = BatchDefinition.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping batch file %s: %s", where, exc)
            return None
        if batch_id != definition.id:
            logger.warning("skipping batch file %s: it defines batch %r", where, definition.id)
            return None
        return definition

    def _read(self, batch_id: str) -> BatchDefinition | None:
        try:
            found = self._fresh(batch_id)
        except OSError as exc:
            logger.warning("skipping batch file %s: %s: %s", self.shelf.label, batch_id, exc)
            return None
        return None if found is None else found[1]

    def _fresh(self, batch_id: str) -> tuple[bytes, BatchDefinition] | None:
        """The stored bytes and their definition, or None; OSError if the shelf fails."""
        data = self.shelf.get(batch_id)
        definition = None if data is None else self._decode(batch_id, data)
        return None if data is None or definition is None else (data, definition)

    def _relist(self, *, force: bool = False) -> None:
        """Pick up batches other processes created (at most every RELIST_SECONDS)."""
        now = time.monotonic()
        if not force and now - self._listed_at < RELIST_SECONDS:
            return
        self._listed_at = now
        for batch_id in self.shelf.names():
            if batch_id in self._batches or not is_valid_job_id(batch_id):
                continue
            definition = self._read(batch_id)
            if definition is not None:
                with self._lock:
                    self._batches.setdefault(definition.id, definition)

    def lookup(self, batch_id: str) -> BatchDefinition | None:
        """The definition, loading it from disk if another process created it since."""
        definition = self._batches.get(batch_id)
        if definition is not None or not is_valid_job_id(batch_id):
            return definition
        now = time.monotonic()
        if now - self._missing.get(batch_id, -RELIST_SECONDS) < RELIST_SECONDS:
            return None
        definition = self._read(batch_id)
        if definition is None:
            self._missing[batch_id] = now
            if len(self._missing) > 10_000:
                self._missing.clear()
            return None
        with self._lock:
            return self._batches.setdefault(batch_id, definition)

    def definition(self, batch_id: str) -> BatchDefinition:
        definition = self.lookup(batch_id)
        if definition is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r}")
        return definition

    def _store(self, definition: BatchDefinition, *, exclusive: bool = False) -> None:
        self.shelf.put(definition.id, definition.to_json(), exclusive=exclusive)
        self._remember(definition)

    def _change(
        self, batch_id: str, change: Callable[[BatchDefinition], BatchDefinition | None]
    ) -> BatchDefinition | None:
        """Apply ``change`` to the stored definition, read fresh, with a compare-and-swap.

        ``change(current)`` returns the new definition, or None to leave it as it
        is; it may raise to refuse. When another process or manager changed the
        definition between our read and our write, we read again and ask
        ``change`` again, so no writer's update is lost. Returns the definition as
        stored now (None if there is none); the cached copy is updated to it.
        """
        for _ in range(CHANGE_TRIES):
            found = self._fresh(batch_id)
            if found is None:
                return None
            data, current = found
            self._remember(current)
            new = change(current)
            if new is None:
                return current
            if self.shelf.replace(batch_id, data, new.to_json()):
                self._remember(new)
                return new
            logger.debug("batch %s: changed by another writer meanwhile; reading again", batch_id)
        raise StatusBridgeError(
            f"batch {batch_id!r}: its definition in {self.shelf.label} changed under each of "
            f"{CHANGE_TRIES} compare-and-swaps; is another program rewriting it?"
        )

    def _remember(self, definition: BatchDefinition) -> None:
        with self._lock:
            self._batches[definition.id] = definition

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
                self._store(definition, exclusive=True)  # never overwrites another batch
            except FileExistsError:
                continue  # 64 random bits collided: astronomically rare, but never silent
            return batch_id
        raise RuntimeError("could not find a free batch id (is the batch folder shared oddly?)")

    def _check_fits(self, definition: BatchDefinition) -> None:
        check_records_fit(
            definition.job_ids,
            definition.params,
            batch_id=definition.id,
            definition_bytes=len(definition.to_json()),
            max_bytes=self.queue.store.max_bytes,
            now=self._clock(),
        )

    def start(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        # Fresh from the shelf: the cached copy may predate another process's start.
        found = self._fresh(batch_id)
        if found is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r}")
        definition = found[1]
        self._remember(definition)
        _refuse_if_started(definition)
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
            found = self._fresh(batch_id)
            if found is not None:
                _refuse_if_started(found[1])
            raise ValueError(f"batch {batch_id!r}: its job {busy[0]!r} is already running")
        started_at = self._clock()

        def claim(current: BatchDefinition) -> BatchDefinition:
            _refuse_if_started(current)
            return replace(current, started_at=started_at)

        # The claim is one compare-and-swap: of several starters (threads,
        # managers, processes) exactly one wins; the others raise before they
        # touch any job record.
        claimed = self._change(batch_id, claim)
        if claimed is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r} (removed meanwhile)")
        # The definition names every job: from here on others can see and cancel
        # them. Their records and the pool get them in the background.
        self.queue.submit_batch(
            generator_func,
            tuple(zip(claimed.job_ids, claimed.params, strict=True)),
            batch_id=batch_id,
            stop=partial(self._cancel_marked, batch_id),
        )

    def _cancel_marked(self, batch_id: str) -> bool:
        """Whether the stored definition carries the cancel marker (read fresh)."""
        data = self.shelf.get(batch_id)
        if data is None:
            return False
        doc = json.loads(data)
        return isinstance(doc, dict) and doc.get("cancelled_at") is not None

    def status(
        self, batch_id: str, seen: tuple[Snapshot, list[BatchJob]] | None = None
    ) -> BatchSummary | None:
        """The batch's summary; ``seen`` is the cache's snapshot and the queue's
        records it does not show yet, when the caller has them already."""
        definition = self.lookup(batch_id)
        if definition is None:
            return None
        if definition.started_at is None:
            seen = seen if seen is not None else self._seen()
            if _has_records(batch_id, seen):
                # Records of a batch this engine holds unstarted: another manager or
                # process started it since we read its definition.
                definition = self._reread(definition)
        final = definition.summary()
        if final is not None:
            return final
        summary = self._live_summary(definition, seen)
        if definition.started_at is None and summary.total:
            return BatchSummary(
                batch_id, definition.name, summary.total, summary.counts, 0.0, "created"
            )
        return summary

    def _seen(self) -> tuple[Snapshot, list[BatchJob]]:
        snapshot = self.queue.snapshot()
        return snapshot, self.queue.unseen_records(snapshot)

    def _live_summary(
        self, definition: BatchDefinition, seen: tuple[Snapshot, list[BatchJob]] | None
    ) -> BatchSummary:
        """From the snapshot's counts for the batch: O(records not cached yet), not O(jobs).

        Jobs with no record count as pending, as ``job()`` says of each; a batch
        whose id other jobs also use is summarised job by job.
        """
        snapshot, unseen = seen if seen is not None else self._seen()
        batch_id = definition.id
        newer = [job for job in unseen if job.batch_id == batch_id]
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
            self._reread(definition)

    def _reread(self, definition: BatchDefinition) -> BatchDefinition:
        """The definition as the shelf has it now (at most every RELIST_SECONDS per batch):
        the cached copy lags when another process starts the batch or saves its counts."""
        now = time.monotonic()
        if now - self._reread_at.get(definition.id, -RELIST_SECONDS) < RELIST_SECONDS:
            return definition
        self._reread_at[definition.id] = now
        fresh = self._read(definition.id)
        if fresh is None:
            return definition
        self._remember(fresh)
        return fresh

    def jobs(self, batch_id: str) -> tuple[BatchJob, ...]:
        """Each job's record; a job without one is PENDING, or left out once the batch has
        finished (retention removed it after the final counts were saved)."""
        definition = self.definition(batch_id)
        found: list[BatchJob] = []
        fresh = False
        for job_id in definition.job_ids:
            job = self.queue.get_job_status(job_id)
            if job is None and not fresh and definition.started_at and definition.final is None:
                # Has another process saved the final counts (and trimmed) meanwhile?
                fresh = True
                definition = self._read(batch_id) or definition
                self._remember(definition)
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
        definition = self.definition(batch_id)
        if definition.final is not None:
            return 0
        unfed = self.queue.stop_feed(batch_id)  # this process's feed of it, if any
        now = self._clock()
        marked = self._change(batch_id, lambda current: _marked_cancelled(current, now))
        if marked is not None:
            definition = marked
        # Jobs the feed cancelled on seeing our marker count too (not a later cancel's).
        ours = definition.cancelled_at == now and definition.final is None
        count = 0
        for job_id in definition.job_ids:
            if self.queue.cancel(job_id) or job_id in unfed:
                count += 1
            elif ours and self.queue.get_job_status(job_id) is None:
                job = self.queue.store.read(job_id)
                count += job is None or _cancelled_by_marker(job, now)
        return count

    def summaries(self) -> list[BatchSummary]:
        self._relist()
        with self._lock:
            definitions = sorted(self._batches.values(), key=lambda d: d.created_at, reverse=True)
        seen = self._seen()
        return [s for d in definitions if (s := self.status(d.id, seen)) is not None]

    def definitions(self) -> Mapping[str, BatchDefinition]:
        self._relist()
        with self._lock:
            return dict(self._batches)

    # -- housekeeping (on the queue's supervisor thread) -------------------------
    def _before_retention(self, snapshot: Snapshot) -> set[str]:
        """Save the final counts of batches that just finished; protect the others."""
        protected: set[str] = set()
        with self._lock:
            open_batches = [d for d in self._batches.values() if d.final is None]
        for cached in open_batches:
            definition = cached
            if cached.started_at is None:
                if not snapshot.summary(cached.id).total:
                    continue  # no record of it to trim
                # Records of a batch this engine holds unstarted: another manager or
                # process started it; its counts must be saved before they go.
                definition = self._reread(cached)
                if definition.started_at is None or definition.final is not None:
                    continue
            counted = snapshot.summary(definition.id)
            if counted.total <= len(definition.job_ids) and not (
                counted.total == len(definition.job_ids) and counted.is_done
            ):
                # A job unfinished or without a record: O(1), from the snapshot's counts.
                protected.add(definition.id)
                continue
            jobs = [snapshot.get(j) for j in definition.job_ids]
            if not all(j is not None and j.is_finished for j in jobs):
                protected.add(definition.id)
                continue
            summary = summarize([j for j in jobs if j is not None], batch_id=definition.id)
            if not self._save_final(definition, summary):
                protected.add(definition.id)
        return protected

    def save_finished(self) -> list[str]:
        """Save the final counts of every started batch whose jobs have all finished.

        Retention does it just before it trims; this runs whenever the queue goes
        idle and when the engine starts too, so a finished batch's definition says
        how it ended even when its records are later removed by something that
        does not know the batches (``statusbridge cleanup``, another program).
        Judged on what this process knows (the cache and its own newer records);
        a job without a record counts as unfinished. Returns the batches settled.
        """
        with self._lock:
            open_batches = [
                d for d in self._batches.values() if d.final is None and d.started_at is not None
            ]
        if not open_batches:
            return []
        seen = self._seen()
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
            if self._change(definition.id, _settled(final)) is None:
                logger.info("batch %s: its definition was removed meanwhile", definition.id)
                with self._lock:
                    self._batches.pop(definition.id, None)
        except OSError:
            logger.exception("batch %s: cannot save its final counts", definition.id)
            return False
        return True

    def _on_idle(self) -> None:
        self.save_finished()
        _release_if_unused(self)

    def remove_old_batches(self, now: datetime | None = None) -> list[str]:
        """Remove batch files older than ``retention_hours`` whose jobs are all finished."""
        if self.retention_hours is None:
            return []
        now = now or self._clock()
        cutoff = now - timedelta(hours=self.retention_hours)
        removed = []
        with self._lock:
            candidates = [d for d in self._batches.values() if d.created_at < cutoff]
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
            with self._lock:
                self._batches.pop(d.id, None)
            removed.append(d.id)
        return removed


# -- sharing engines between managers of one process ---------------------------
_engines: dict[Hashable, _Batches] = {}
_engines_lock = threading.RLock()


def _release_if_unused(engine: _Batches, *, wait: bool = False) -> None:
    """Shut the engine's queue down once no manager uses it and its jobs are done."""
    with _engines_lock:
        if engine.handles > 0:
            return
        if engine.queue.running and not wait:
            return  # its queue tells us (on_idle) when its jobs are done
        if engine.key is not None and _engines.get(engine.key) is engine:
            del _engines[engine.key]
    engine.queue.shutdown(wait=wait)
    engine.shelf.close()  # its lock descriptor or connection (reopened if used again)


def _detach(engine: _Batches, wait: bool) -> None:
    with _engines_lock:
        engine.handles -= 1
    _release_if_unused(engine, wait=wait)


def _location_key(location: str | os.PathLike[str]) -> str:
    return str(location) if is_url(location) else os.path.realpath(location)


class BatchManager:
    """Create, start, follow and cancel named batches of jobs.

    Keeps the seed application's names: switching is a one-line import change::

        manager = BatchManager()
        batch_id = manager.create_custom_batch(jobs, "Test")
        manager.start_batch(batch_id, generator)
        status = manager.get_batch_status(batch_id)

    Building a manager again for the same folders and options in one process
    (as a Streamlit script does on every rerun) reuses the running engine.
    """

    def __init__(
        self,
        batch_dir: str | os.PathLike[str] | None = None,
        max_concurrent: int = 2,
        status_dir: str | os.PathLike[str] = "batch_status",
        *,
        executor: Literal["thread", "process"] | Executor = "thread",
        max_completed_jobs: int = 1000,
        retention_hours: float | None = 24.0,
        clock: Callable[[], datetime] = utc_now,
        cache: StatusCache | None = None,
        **queue_options: Any,
    ) -> None:
        check_queue_options(
            {
                "max_concurrent": max_concurrent,
                "max_completed_jobs": max_completed_jobs,
                "retention_hours": retention_hours,
                **queue_options,
            }
        )
        if batch_dir is None:
            # With a URL status location the definitions live on the same server.
            batch_dir = status_dir if is_url(status_dir) else "batches"
        key: Hashable | None = None
        if isinstance(executor, str) and clock is utc_now and cache is None:
            try:
                key = (
                    _location_key(batch_dir),
                    _location_key(status_dir),
                    max_concurrent,
                    executor,
                    max_completed_jobs,
                    retention_hours,
                    frozenset(queue_options.items()),
                )
                hash(key)
            except TypeError:
                key = None  # an unhashable option: this manager gets its own engine
        with _engines_lock:
            engine = _engines.get(key) if key is not None else None
            if engine is None:
                shelf = open_shelf(batch_dir)
                queue = BatchQueue(
                    max_concurrent,
                    max_completed_jobs,
                    status_dir,
                    executor=executor,
                    retention_hours=retention_hours,
                    clock=clock,
                    cache=cache,
                    **queue_options,
                )
                engine = _Batches(shelf, queue, retention_hours, clock)
                engine.key = key
                if key is not None:
                    _engines[key] = engine
            engine.handles += 1
        self._engine = engine
        self._detach = weakref.finalize(self, _detach, engine, False)

    @property
    def queue(self) -> BatchQueue:
        return self._engine.queue

    @property
    def batch_location(self) -> str:
        """Where the batch definitions live: a folder, or a URL (password hidden)."""
        return self._engine.shelf.label

    @property
    def batch_dir(self) -> Path:
        """Deprecated: use ``batch_location``. The definitions' folder (ValueError for a URL)."""
        warnings.warn(
            "BatchManager.batch_dir is deprecated; use batch_location",
            DeprecationWarning,
            stacklevel=2,
        )
        if is_url(self.batch_location):
            raise ValueError(f"batch definitions live at {self.batch_location}, not in a folder")
        return Path(self.batch_location)

    @property
    def retention_hours(self) -> float | None:
        return self._engine.retention_hours

    # -- the seed API ----------------------------------------------------------
    def create_custom_batch(self, jobs: list[dict[str, Any]], name: str) -> str:
        """Define a batch, one job per params dict; returns its id (run it with ``start_batch``)."""
        return self._engine.create(jobs, name)

    def start_batch(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        """Submit every job of the batch: ``generator_func(params)`` runs once per job.

        All or nothing: if the function cannot be sent to the workers (a lambda
        with ``executor="process"``), it raises and the batch stays unstarted.
        """
        self._engine.start(batch_id, generator_func)

    def get_batch_status(self, batch_id: str) -> BatchSummary | None:
        """Counts per status, overall progress and state; None for an unknown batch."""
        return self._engine.status(batch_id)

    def get_job_status(self, job_id: str) -> BatchJob | None:
        return self._engine.queue.get_job_status(job_id)

    def get_batch_jobs(self, batch_id: str) -> tuple[BatchJob, ...]:
        """Every job of the batch, in definition order (unstarted ones as PENDING).

        Once the batch has finished, retention may remove its records (its summary
        keeps the final counts): those jobs are left out, never shown unfinished.
        """
        return self._engine.jobs(batch_id)

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every unfinished job of the batch; returns how many were cancelled."""
        return self._engine.cancel(batch_id)

    def list_batches(self) -> list[BatchSummary]:
        """Every known batch (also those other processes created), newest first."""
        return self._engine.summaries()

    @property
    def batches(self) -> Mapping[str, BatchDefinition]:
        return self._engine.definitions()

    def remove_old_batches(self, now: datetime | None = None) -> list[str]:
        """Remove batch files older than ``retention_hours`` whose jobs are all finished."""
        return self._engine.remove_old_batches(now)

    # -- life cycle ---------------------------------------------------------
    def shutdown(self, wait: bool = True) -> None:
        """Let go of the engine; the last manager using it shuts it down.

        With ``wait`` (and no other manager on it), waits for the jobs first.
        May be called twice.
        """
        if self._detach.detach() is not None:
            _detach(self._engine, wait)
        elif wait:
            _release_if_unused(self._engine, wait=True)

    def close(self) -> None:
        """``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def __enter__(self) -> BatchManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<BatchManager {self.batch_location!r} queue={self.queue!r}>"
