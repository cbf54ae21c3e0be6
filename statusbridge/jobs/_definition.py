"""The batch definition format (schema 1) and the changes made to it.

A definition (name, the jobs' ids and params, when it was created and started,
its cancel marker, the jobs cancelled one by one before they had a record and,
once it has finished, its final counts) is one JSON
document, changed only by compare-and-swap (see ``_definitions``). Each change
here is a function of the current definition that returns the new one, or
None to leave it as it is.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from statusbridge.cache import BatchSummary
from statusbridge.jobs._batch_feed import CANCELLED_BY_BATCH
from statusbridge.record import JOB_ID_PATTERN, BatchJob, BatchStatus, validate_job_id
from statusbridge.record._frozen import freeze, thaw

__all__ = [
    "BatchDefinition",
    "FinalCounts",
    "cancelled_by_marker",
    "is_valid_job_id",
    "job_marked_cancelled",
    "marked_cancelled",
    "new_batch_id",
    "refuse_if_started",
    "settled",
]


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
    # Jobs cancelled one by one, from anywhere, while they had no record (``_unrecorded``).
    cancelled_jobs: frozenset[str] = frozenset()

    def jobs_json(self) -> str:
        """The JSON text of the jobs: what no change of the definition touches."""
        jobs = [
            {"id": j, "params": thaw(p)} for j, p in zip(self.job_ids, self.params, strict=True)
        ]
        return json.dumps(jobs, ensure_ascii=False)

    def to_json(self, *, jobs_json: str | None = None) -> bytes:
        """The stored document; ``jobs_json``: this definition's ``jobs_json()``, when the
        caller kept it from an earlier version (a change then encodes only a few fields)."""
        doc: dict[str, Any] = {
            "schema": 1,
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }
        if self.cancelled_at is not None:
            doc["cancelled_at"] = self.cancelled_at.isoformat()
        if self.cancelled_jobs:
            doc["cancelled_jobs"] = sorted(self.cancelled_jobs)
        if self.final is not None:
            doc["final"] = self.final.to_doc()
        head = json.dumps(doc, ensure_ascii=False)
        jobs = self.jobs_json() if jobs_json is None else jobs_json
        return f'{head[:-1]}, "jobs": {jobs}}}\n'.encode()

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
        cancelled_jobs = doc.get("cancelled_jobs", [])
        if not isinstance(cancelled_jobs, list):
            raise TypeError("cancelled_jobs must be a list")
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
            cancelled_jobs=frozenset(validate_job_id(j) for j in cancelled_jobs),
        )

    def summary(self) -> BatchSummary | None:
        """The saved final summary, None while the batch has not finished."""
        if self.final is None:
            return None
        f = self.final
        return BatchSummary(self.id, self.name, len(self.job_ids), f.counts, f.progress, f.state)


def refuse_if_started(definition: BatchDefinition) -> None:
    if definition.started_at is not None:
        raise ValueError(f"batch {definition.id!r} was already started at {definition.started_at}")


def settled(final: FinalCounts) -> Callable[[BatchDefinition], BatchDefinition | None]:
    """The change that saves ``final``, unless another process saved its counts first."""
    return lambda current: None if current.final is not None else replace(current, final=final)


def marked_cancelled(current: BatchDefinition, now: datetime) -> BatchDefinition | None:
    """The change that sets the cancel marker of a started, unfinished batch (else None)."""
    if current.started_at is None or current.final is not None or current.cancelled_at:
        return None
    return replace(current, cancelled_at=now)


def job_marked_cancelled(current: BatchDefinition, job_id: str) -> BatchDefinition | None:
    """The change that names ``job_id`` among a started, unfinished batch's cancelled jobs
    (else None: nothing to stop, or the whole batch is marked already)."""
    if current.started_at is None or current.final is not None or current.cancelled_at:
        return None
    if job_id in current.cancelled_jobs or job_id not in current.job_ids:
        return None
    return replace(current, cancelled_jobs=current.cancelled_jobs | {job_id})


def cancelled_by_marker(job: BatchJob, marked_at: datetime) -> bool:
    return (
        job.status is BatchStatus.CANCELLED
        and job.message == CANCELLED_BY_BATCH
        and job.updated_at is not None
        and job.updated_at >= marked_at
    )


def is_valid_job_id(text: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(text) is not None


def new_batch_id(now: datetime) -> str:
    """Sortable by creation time, unique across processes and hosts (64 random bits)."""
    return f"batch-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"
