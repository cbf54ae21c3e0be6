"""BatchManager: named batches of jobs, with the seed application's API.

A batch definition (name, the jobs' params, when it was created and started)
is saved atomically as ``<batch_dir>/<batch_id>.json``; the jobs' status lives
in the status folder like any other job's. Definitions are loaded once at
start and kept in memory, so status calls never touch the disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from statusbridge.cache import BatchSummary, StatusCache, summarize
from statusbridge.errors import UnknownJobError
from statusbridge.jobs._queue import BatchQueue
from statusbridge.record import BatchJob, BatchStatus, freeze, thaw, utc_now, validate_job_id
from statusbridge.store import write_atomic

__all__ = ["BatchDefinition", "BatchManager"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchDefinition:
    """What a batch is: its jobs' ids and params, its name and times."""

    id: str
    name: str
    job_ids: tuple[str, ...]
    params: tuple[Any, ...]
    created_at: datetime
    started_at: datetime | None = None

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
        return json.dumps(doc, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> BatchDefinition:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("schema") != 1:
            raise ValueError("not a schema-1 batch definition")
        jobs = doc["jobs"]
        started = doc.get("started_at")
        return cls(
            id=validate_job_id(doc["id"]),
            name=str(doc["name"]),
            job_ids=tuple(validate_job_id(j["id"]) for j in jobs),
            params=tuple(freeze(j.get("params")) for j in jobs),
            created_at=datetime.fromisoformat(doc["created_at"]),
            started_at=datetime.fromisoformat(started) if started else None,
        )


class BatchManager:
    """Create, start, follow and cancel named batches of jobs.

    Keeps the seed application's names: switching is a one-line import change::

        manager = BatchManager()
        batch_id = manager.create_custom_batch(jobs, "Test")
        manager.start_batch(batch_id, generator)
        status = manager.get_batch_status(batch_id)
    """

    def __init__(
        self,
        batch_dir: str | os.PathLike[str] = "batches",
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
        self.batch_dir = Path(batch_dir)
        self.batch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.retention_hours = retention_hours
        self._clock = clock
        self.queue = BatchQueue(
            max_concurrent,
            max_completed_jobs,
            status_dir,
            executor=executor,
            retention_hours=retention_hours,
            clock=clock,
            cache=cache,
            **queue_options,
        )
        self._lock = threading.Lock()
        self._batches: dict[str, BatchDefinition] = self._load()
        self.remove_old_batches()

    def _load(self) -> dict[str, BatchDefinition]:
        batches: dict[str, BatchDefinition] = {}
        for path in sorted(self.batch_dir.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                definition = BatchDefinition.from_json(path.read_bytes())
            except (ValueError, KeyError, TypeError, OSError) as exc:
                logger.warning("skipping batch file %s: %s", path, exc)
                continue
            batches[definition.id] = definition
        return batches

    def _save(self, definition: BatchDefinition) -> None:
        write_atomic(self.batch_dir / f"{definition.id}.json", definition.to_json())

    # -- the seed API ----------------------------------------------------------
    def create_custom_batch(self, jobs: list[dict[str, Any]], name: str) -> str:
        """Define a batch, one job per params dict; returns its id (run it with ``start_batch``)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a batch needs a non-empty name")
        if not isinstance(jobs, (list, tuple)):
            raise TypeError(f"jobs must be a list of params, not {type(jobs).__name__}")
        params = tuple(freeze(p, _path=f"jobs[{i}]") for i, p in enumerate(jobs))
        now = self._clock()
        batch_id = f"batch-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
        definition = BatchDefinition(
            id=batch_id,
            name=name,
            job_ids=tuple(f"{batch_id}-{i:04d}" for i in range(len(params))),
            params=params,
            created_at=now,
        )
        self._save(definition)
        with self._lock:
            self._batches[batch_id] = definition
        return batch_id

    def start_batch(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        """Submit every job of the batch: ``generator_func(params)`` runs once per job."""
        definition = self._definition(batch_id)
        if definition.started_at is not None:
            raise ValueError(f"batch {batch_id!r} was already started at {definition.started_at}")
        started = BatchDefinition(
            definition.id,
            definition.name,
            definition.job_ids,
            definition.params,
            definition.created_at,
            self._clock(),
        )
        self._save(started)
        with self._lock:
            self._batches[batch_id] = started
        for job_id, params in zip(definition.job_ids, definition.params, strict=True):
            self.queue.submit(generator_func, thaw(params), job_id=job_id, batch_id=batch_id)

    def get_batch_status(self, batch_id: str) -> BatchSummary | None:
        """Counts per status, overall progress and state; None for an unknown batch. No disk I/O."""
        definition = self._batches.get(batch_id)
        if definition is None:
            return None
        jobs = [self._job(job_id, definition) for job_id in definition.job_ids]
        summary = summarize(jobs, batch_id=batch_id, name=definition.name)
        if definition.started_at is None and summary.total:
            return BatchSummary(
                batch_id, definition.name, summary.total, summary.counts, 0.0, "created"
            )
        return summary

    def _job(self, job_id: str, definition: BatchDefinition) -> BatchJob:
        job = self.queue.get_job_status(job_id)
        if job is not None:
            return job
        # Not written yet (or removed by retention): count it as pending, or as
        # finished if its batch ran long ago.
        return BatchJob(job_id, BatchStatus.PENDING, batch_id=definition.id)

    def get_job_status(self, job_id: str) -> BatchJob | None:
        return self.queue.get_job_status(job_id)

    def get_batch_jobs(self, batch_id: str) -> tuple[BatchJob, ...]:
        """Every job of the batch, in definition order (unstarted ones as PENDING)."""
        definition = self._definition(batch_id)
        return tuple(self._job(job_id, definition) for job_id in definition.job_ids)

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every unfinished job of the batch; returns how many were cancelled."""
        definition = self._definition(batch_id)
        return sum(1 for job_id in definition.job_ids if self.queue.cancel(job_id))

    def list_batches(self) -> list[BatchSummary]:
        """Every known batch, newest first."""
        with self._lock:
            definitions = sorted(self._batches.values(), key=lambda d: d.created_at, reverse=True)
        summaries = []
        for d in definitions:
            summary = self.get_batch_status(d.id)
            if summary is not None:
                summaries.append(summary)
        return summaries

    @property
    def batches(self) -> Mapping[str, BatchDefinition]:
        return dict(self._batches)

    def _definition(self, batch_id: str) -> BatchDefinition:
        definition = self._batches.get(batch_id)
        if definition is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r}")
        return definition

    # -- housekeeping --------------------------------------------------------
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
            # Records already removed by retention count as finished.
            jobs = (self.queue.get_job_status(job_id) for job_id in d.job_ids)
            if d.started_at is None or any(j is not None and not j.is_finished for j in jobs):
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.batch_dir / f"{d.id}.json").unlink()
            with self._lock:
                self._batches.pop(d.id, None)
            removed.append(d.id)
        return removed

    def shutdown(self, wait: bool = True) -> None:
        self.queue.shutdown(wait=wait)

    def __enter__(self) -> BatchManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
