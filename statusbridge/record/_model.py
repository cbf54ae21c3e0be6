"""The record: one job's status, immutable so it can be shared with any thread."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any

from statusbridge.record._frozen import EMPTY, FrozenMap, freeze
from statusbridge.record._ids import validate_job_id

__all__ = ["FINISHED", "BatchJob", "BatchStatus", "checked_job", "utc_now"]


class BatchStatus(StrEnum):
    """Life-cycle state of a job. The value is what the file stores."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for the three terminal states."""
        return self in FINISHED


FINISHED = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED})
_STATUS_BY_VALUE: dict[str, BatchStatus] = {s.value: s for s in BatchStatus}
_TIME_FIELDS = ("created_at", "started_at", "completed_at", "updated_at", "heartbeat_at")


def utc_now() -> datetime:
    """The store's default clock: aware UTC."""
    return datetime.now(UTC)


def _check_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime or None, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 near midnight: a ValueError, like every bad value
        raise ValueError(f"{name} {value.isoformat()} is out of range in UTC") from None


def _check_optional_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class BatchJob:
    """One job's status. Immutable: nested ``params``/``result``/``meta`` are frozen too.

    Examples:
        >>> job = BatchJob(id="a", status=BatchStatus.RUNNING, progress=0.5, meta={"step": 2})
        >>> job.meta["step"], job.is_finished
        (2, False)
    """

    id: str
    status: BatchStatus = BatchStatus.PENDING
    params: Any = None
    result: Any = None
    error_message: str | None = None
    progress: float | None = None  # after construction always a float: see progress_known
    message: str = ""
    batch_id: str | None = None
    meta: FrozenMap = field(default=EMPTY)
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    seq: int = 0
    # Who runs the job, for liveness checks (statusbridge.jobs._liveness):
    owner: str | None = None  # "host:pid", for people
    owner_start: int | None = None  # its start, ms since the Unix epoch (if owner_machine is set)
    owner_machine: str | None = None  # where that pid means something: machine, boot, pid namespace
    cancel_requested: bool = False
    heartbeat_at: datetime | None = None
    # False when no progress was ever reported: ``progress`` then holds a stand-in
    # (0.0, or 1.0 once completed), so ``st.progress(job.progress)`` works in every
    # state; ``reported_progress`` is None. Not a stored field: the file has null.
    progress_known: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        validate_job_id(self.id)
        status = self.status
        if type(status) is not BatchStatus:
            # A dict lookup: calling the Enum class by value costs ~10x more.
            member = _STATUS_BY_VALUE.get(status) if isinstance(status, str) else None
            if member is None:
                allowed = ", ".join(s.value for s in BatchStatus)
                raise ValueError(f"status {status!r} is not one of: {allowed}")
            setattr_(self, "status", member)
        # Write back only what freezing changed: object.__setattr__ is not free, and
        # decoding 100,000 records at start-up goes through here.
        params = freeze(self.params, _path="params")
        if params is not self.params:
            setattr_(self, "params", params)
        result = freeze(self.result, _path="result")
        if result is not self.result:
            setattr_(self, "result", result)
        meta = self.meta
        if not isinstance(meta, FrozenMap):
            if not isinstance(meta, dict):
                raise TypeError(f"meta must be a mapping, not {type(meta).__name__}")
            setattr_(self, "meta", freeze(meta, _path="meta"))
        _check_optional_str("error_message", self.error_message)
        _check_optional_str("owner", self.owner)
        _check_optional_str("owner_machine", self.owner_machine)
        if not isinstance(self.message, str):
            raise TypeError(f"message must be a str, not {type(self.message).__name__}")
        if self.batch_id is not None:
            if not isinstance(self.batch_id, str):
                raise TypeError(
                    f"batch_id must be a str or None, not {type(self.batch_id).__name__}"
                )
            try:
                validate_job_id(self.batch_id)
            except ValueError as exc:
                raise ValueError(f"batch_id: {exc}") from None
        progress = self.progress
        if progress is None or not self.progress_known:
            # A stand-in for "not reported" (also when replace() changed the status).
            setattr_(self, "progress_known", False)
            setattr_(self, "progress", 1.0 if self.status is BatchStatus.COMPLETED else 0.0)
        elif type(progress) is float:
            if not 0.0 <= progress <= 1.0:  # NaN fails this too
                raise ValueError(f"progress must be between 0.0 and 1.0, got {progress!r}")
        elif progress is not None:
            if isinstance(progress, bool) or not isinstance(progress, (int, float)):
                raise TypeError(f"progress must be a number or None, not {type(progress).__name__}")
            if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
                raise ValueError(f"progress must be between 0.0 and 1.0, got {progress!r}")
            setattr_(self, "progress", float(progress))
        if isinstance(self.seq, bool) or not isinstance(self.seq, int):
            raise TypeError(f"seq must be an int, not {type(self.seq).__name__}")
        if self.seq < 0:
            raise ValueError(f"seq must be >= 0, got {self.seq}")
        if self.owner_start is not None and (
            isinstance(self.owner_start, bool) or not isinstance(self.owner_start, int)
        ):
            raise TypeError("owner_start must be an int or None")
        if not isinstance(self.cancel_requested, bool):
            raise TypeError("cancel_requested must be a bool")
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None and not (type(value) is datetime and value.tzinfo is UTC):
                setattr_(self, name, _check_time(name, value))

    @property
    def is_finished(self) -> bool:
        """True once the job is COMPLETED, FAILED or CANCELLED."""
        return self.status in FINISHED

    @property
    def duration(self) -> float | None:
        """Seconds from start to completion (or to the last update while running)."""
        if self.started_at is None:
            return None
        end = self.completed_at or self.updated_at
        return None if end is None else max(0.0, (end - self.started_at).total_seconds())

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds left, from progress over elapsed time; see ``eta``."""
        return self.eta()

    def eta(self, *, now: datetime | None = None) -> float | None:
        """Estimated seconds left at ``now`` (default: the current time).

        ``elapsed * (1 - progress) / progress``: None unless the job is RUNNING,
        has started and reported a progress above 0. A job that never reports
        progress has no ETA; one that stops reporting sees it grow.
        """
        from statusbridge.record._eta import job_eta  # _eta builds on this module

        return job_eta(self, utc_now() if now is None else now)

    @property
    def reported_progress(self) -> float | None:
        """The progress the job reported, None if it never did ("unknown").

        ``progress`` is always a number (a stand-in when unknown), for bars.
        """
        return self.progress if self.progress_known else None

    def replace(self, **changes: Any) -> BatchJob:
        """A copy with some fields changed (validated like the constructor)."""
        if "progress" in changes:
            changes.setdefault("progress_known", changes["progress"] is not None)
        # What dataclasses.replace() does (every field set, then __post_init__ validates
        # the whole record), through the slots' own setters: every write merges through
        # here, and the generated __init__ of a frozen class pays object.__setattr__ per field.
        values = list(_INIT_VALUES(self))
        for name, value in changes.items():
            at = _INIT_INDEX.get(name)
            if at is None:
                raise TypeError(f"BatchJob.replace() got an unexpected keyword argument {name!r}")
            values[at] = value
        job = checked_job(values)
        job.__post_init__()
        return job


# The stored fields (``progress_known`` is derived from ``progress`` being null).
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(BatchJob) if f.name != "progress_known")


# Every field's value in field order, and each field's place in it (``BatchJob.replace``).
_INIT_VALUES = attrgetter(*(f.name for f in dataclasses.fields(BatchJob)))
_INIT_INDEX = {f.name: at for at, f in enumerate(dataclasses.fields(BatchJob))}


class _Unfrozen:
    """BatchJob's slots without its frozen ``__setattr__``: ``checked_job`` fills one
    with plain attribute stores, then makes it a BatchJob (the same memory layout)."""

    __slots__ = BatchJob.__slots__


def checked_job(values: Sequence[Any]) -> BatchJob:
    """A BatchJob from every field's value (in field order, ``progress_known`` last),
    each already checked and normalised as ``__post_init__`` would leave it.

    For the decoder's fast path: at start-up it builds every record of a folder,
    and the general constructor's keyword call and re-validation cost more than
    reading the file. Anything not already in final form goes through ``BatchJob(...)``.
    A frozen class's own slot setters cost a call each; these stores do not.
    """
    job: Any = object.__new__(_Unfrozen)
    (job.id, job.status, job.params, job.result, job.error_message, job.progress, job.message,
     job.batch_id, job.meta, job.created_at, job.started_at, job.completed_at, job.updated_at,
     job.seq, job.owner, job.owner_start, job.owner_machine, job.cancel_requested,
     job.heartbeat_at, job.progress_known) = values  # fmt: skip
    job.__class__ = BatchJob
    return job  # type: ignore[no-any-return]
