"""StatusStore: the write side. Any thread, process or host may write; each write is atomic.

``StatusStore(location)`` opens the backend the location names (see
``backend_for``): a folder gives a ``FolderStore``, a ``sqlite://`` URL a
``SqliteStore``, a ``redis://`` URL a ``RedisStore``. This module imports none of
them: the registry does, on first use. What every backend shares lives here:
argument checks, the update contract, retention.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob, BatchStatus, FrozenMap, validate_job_id
from statusbridge.record._frozen import freeze
from statusbridge.record._model import FIELD_NAMES, utc_now
from statusbridge.record._ranges import NumberRange
from statusbridge.store._files import DEFAULT_MAX_BYTES, RECORD_SUFFIX, classify_name
from statusbridge.store._location import Location, backend_for, check_options
from statusbridge.store._retention import RetentionPolicy, finished_at

__all__ = [
    "UPDATABLE_FIELDS",
    "ScanReport",
    "StatusStore",
    "WriteListener",
    "merged",
]

logger = logging.getLogger(__name__)

# (the record as written, the backend's version of its stored form: see on_written)
WriteListener = Callable[[BatchJob, object], None]

_LOCK_TIMEOUT = NumberRange(infinite=True)  # 0: try once; math.inf: wait forever

# id names the record, seq and updated_at are the store's to set.
UPDATABLE_FIELDS = frozenset(FIELD_NAMES) - {"id", "seq", "updated_at"}


class ScanReport(NamedTuple):
    """What ``StatusStore.scan_report`` found: valid records, and every other entry's reason."""

    jobs: dict[str, BatchJob]
    invalid: dict[str, str]  # file name -> reason, in the words of StatusCache.health()

    @classmethod
    def of(cls, outcomes: Mapping[str, BatchJob | InvalidRecordError]) -> ScanReport:
        """From what a backend decoded per job id: the records, and why the others are not."""
        jobs: dict[str, BatchJob] = {}
        invalid: dict[str, str] = {}
        for job_id, outcome in outcomes.items():
            if isinstance(outcome, BatchJob):
                jobs[job_id] = outcome
            else:
                invalid[f"{job_id}{RECORD_SUFFIX}"] = outcome.reason
        return cls(jobs, invalid)

    def invalid_records(self) -> dict[str, str]:
        """Only entries named like records (``<job id>.json``): jobs that could not be read."""
        return {n: r for n, r in self.invalid.items() if classify_name(n) == "record"}


class StatusStore:
    """Atomic writes of one record per job, in a folder or on a Redis/Valkey server.

    ``StatusStore("batch_status")`` is a ``FolderStore``,
    ``StatusStore("sqlite:///status.db")`` a ``SqliteStore`` and
    ``StatusStore("redis://host:6379/0?prefix=app")`` a ``RedisStore``. All have
    this API and the same semantics.
    """

    _clock: Callable[[], datetime]
    _lock_timeout: float
    _write_listeners: tuple[WriteListener, ...] = ()
    max_bytes: int  # the largest record a write accepts, as its encoded JSON document

    def __new__(
        cls,
        directory: str | os.PathLike[str] | Location = "batch_status",
        *,
        durable: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        file_mode: int | None = None,
        dir_mode: int | None = None,
        stream_maxlen: int | None = None,
        log_keep: int | None = None,
    ) -> StatusStore:
        """Open the backend ``directory`` names; see ``__init__`` for the options."""
        backend, _where = backend_for(directory)
        opened: type[StatusStore] = backend.load("store") if cls is StatusStore else cls
        given = {
            "file_mode": file_mode,
            "dir_mode": dir_mode,
            "stream_maxlen": stream_maxlen,
            "log_keep": log_keep,
        }
        check_options(backend.name, opened, given)
        return super().__new__(opened)

    # -- what each backend supplies -----------------------------------------------
    def __init__(
        self,
        directory: str | os.PathLike[str] | Location = "batch_status",
        *,
        durable: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        file_mode: int | None = None,
        dir_mode: int | None = None,
        stream_maxlen: int | None = None,
        log_keep: int | None = None,
    ) -> None:  # pragma: no cover - replaced by every backend
        """Every option of every backend; a backend refuses (TypeError) those it does not take.

        On every backend: ``durable`` (an acknowledged write survives power loss),
        ``max_bytes`` (the largest record), ``lock_timeout`` (seconds a write waits
        for its job), ``clock``. Folder: ``file_mode``, ``dir_mode`` (of the files
        and folders it creates). SQLite: ``file_mode``, ``dir_mode`` (of the
        database and its folder), ``log_keep`` (change-log entries kept for caches).
        Redis: ``stream_maxlen`` (entries of the change stream kept for caches).
        None means the backend's default.
        """
        raise TypeError("StatusStore is opened through a backend")

    @property
    def location(self) -> str:
        """The location as one string another process can open again (folder or URL)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The location for people: the folder as given, or the URL without its password."""
        raise NotImplementedError

    def read(self, job_id: str) -> BatchJob | None:
        raise NotImplementedError

    def scan_report(self) -> ScanReport:
        raise NotImplementedError

    def scan(self) -> dict[str, BatchJob]:
        """Every valid record; invalid ones are skipped (``scan_report`` says which and why)."""
        return self.scan_report().jobs

    def modify(
        self, job_id: str, change: Callable[[BatchJob | None], dict[str, Any] | None]
    ) -> BatchJob | None:
        raise NotImplementedError

    def modify_many(
        self, changes: Sequence[tuple[str, Callable[[BatchJob | None], dict[str, Any] | None]]]
    ) -> list[BatchJob | Exception | None]:
        """Each ``modify(job_id, change)`` in turn; each one's outcome, or the exception
        it raised (one failing does not stop the rest).

        For a writer with many small writes ready at once (a queue's jobs that just
        ended): SQLite commits them all in one transaction, so every cache that follows
        the database wakes once for them.
        """
        outcomes: list[BatchJob | Exception | None] = []
        for job_id, change in changes:
            try:
                outcomes.append(self.modify(job_id, change))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, per write
                outcomes.append(exc)
        return outcomes

    def delete(self, job_id: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _delete_one_if_unchanged(self, job: BatchJob) -> bool:
        raise NotImplementedError

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are (``seq`` and times included); how many were written.

        For copying between locations (``statusbridge copy``): a record already here
        with this ``seq`` or a newer one is left alone, so copying twice changes nothing.
        """
        raise NotImplementedError

    def _after_cleanup(self) -> None:
        """Backend housekeeping after a cleanup (the folder sweeps stale temp files)."""

    # -- shared --------------------------------------------------------------------
    def on_written(self, listener: WriteListener) -> Callable[[], None]:
        """Call ``listener(job, version)`` after each record this store writes; returns the undo.

        For write-through to a cache of the same location in this process
        (``StatusCache.absorb``): ``version`` is what lets that cache recognise the
        stored form when its feed reports it, instead of reading and decoding it again
        (a folder: the written file's identity; SQLite: the stored text). Backends
        that have no such version call nothing. The listener runs on the writing
        thread, on a folder with the job's lock held: it must be quick and must not
        write.
        """
        self._write_listeners = (*self._write_listeners, listener)

        def undo() -> None:
            self._write_listeners = tuple(f for f in self._write_listeners if f is not listener)

        return undo

    def _written(self, job: BatchJob, version: object) -> None:
        for listener in self._write_listeners:
            try:
                listener(job, version)
            except Exception:
                logger.exception("statusbridge: write listener %r raised; continuing", listener)

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for its job's lock (or the server); ``math.inf`` waits forever."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, value: float) -> None:
        self._lock_timeout = float(_LOCK_TIMEOUT.check("lock_timeout", value))

    def __enter__(self) -> StatusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, job_id: str, **fields: Any) -> BatchJob:
        """Atomic read-modify-write of one job; creates it if missing.

        Top-level fields replace, ``meta`` merges key by key, ``seq`` goes up by
        one and ``updated_at`` is set. Setting status RUNNING fills
        ``started_at`` and a finished status fills ``completed_at`` unless given.
        When this returns, the record is stored.
        """
        self._check_fields(fields)
        job = self.modify(job_id, lambda current: fields)
        assert job is not None
        return job

    def create_absent(self, records: Mapping[str, Mapping[str, Any]]) -> list[BatchJob]:
        """Create each job's record from its fields, unless the job has a record; the created ones.

        For many new jobs at once (a started batch's PENDING records): one transaction
        on SQLite, one round trip on Redis, a lock and a ``lstat`` per record on a
        folder (no read). Every record is checked before any is written, so
        bad fields raise and write nothing. A job that has a record already (any
        status) is left alone and not returned.
        """
        created = []
        for job_id, (fields, _job) in self._new_records(records, self._clock()).items():
            made = self.modify(job_id, partial(_if_absent, fields))
            if made is not None:
                created.append(made)
        return created

    def _new_records(
        self, records: Mapping[str, Mapping[str, Any]], now: datetime
    ) -> dict[str, tuple[dict[str, Any], BatchJob]]:
        """Each job's checked fields and the record they make of no record (raises on the
        first bad one, before anything is written)."""
        new = {}
        for job_id, given in records.items():
            validate_job_id(job_id)
            fields = dict(given)
            self._check_fields(fields)
            new[job_id] = (fields, merged(job_id, None, fields, now))
        return new

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> None:
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise TypeError(
                f"update() got unknown field(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(UPDATABLE_FIELDS))}"
            )
        meta = fields.get("meta")
        if "meta" in fields and not isinstance(meta, FrozenMap):
            if not isinstance(meta, dict) and meta is not None:
                raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
            fields["meta"] = freeze(meta or {}, _path="meta")

    def cleanup(
        self,
        max_age_hours: float | None = 24,
        max_completed: int | None = None,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
    ) -> int:
        """Remove finished records older than ``max_age_hours`` or past ``max_completed``.

        Pending and running jobs are never removed, nor are the finished jobs of a
        batch that still has one: its counts would drop mid-run. Returns how many
        records were (or, with ``dry_run``, would be) removed.
        """
        return len(self.cleanup_ids(max_age_hours, max_completed, now=now, dry_run=dry_run))

    def cleanup_ids(
        self,
        max_age_hours: float | None = 24,
        max_completed: int | None = None,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Like ``cleanup`` but returns the removed ids."""
        policy = RetentionPolicy(max_completed, max_age_hours)
        now = now or self._clock()
        jobs = self.scan().values()
        unfinished_batches = {j.batch_id for j in jobs if j.batch_id and not j.is_finished}
        doomed = policy.select(
            sorted(jobs, key=_finished_order, reverse=True),
            now=now,
            protected=lambda job: job.batch_id in unfinished_batches,
        )
        if dry_run:
            return [job.id for job in doomed]
        removed = self.delete_if_unchanged(doomed)
        self._after_cleanup()
        return removed

    def delete_if_unchanged(
        self, jobs: Iterable[BatchJob], *, versions: Mapping[str, bytes] | None = None
    ) -> list[str]:
        """Delete these records unless they changed since read; return the ids removed.

        ``versions`` (job id -> ``StatusCache.versions_of`` of a cache of this same
        location) lets a backend that can tell a record's version without reading it
        check that instead; the others ignore it.
        """
        return [job.id for job in jobs if self._delete_one_if_unchanged(job)]


def _if_absent(fields: dict[str, Any], current: BatchJob | None) -> dict[str, Any] | None:
    return fields if current is None else None


def overwrite_refused(exc: InvalidRecordError, source: str) -> InvalidRecordError:
    """What a write raises over a record it cannot decode (nothing was written): the
    record is left for inspection, never replaced by one built without its values."""
    return InvalidRecordError(
        f"{exc.reason}; refusing to overwrite it (delete it or fix it first)", source=source
    )


def merged(
    job_id: str, current: BatchJob | None, fields: dict[str, Any], now: datetime
) -> BatchJob:
    """The record an update of ``fields`` at ``now`` makes of ``current`` (None: a new job).

    Fields replace, ``meta`` merges, ``seq`` + 1; RUNNING fills ``started_at`` and a
    finished status ``completed_at`` unless set; COMPLETED clears an ``error_message``
    it does not set (one left by a judgement the job outlived, say "worker died" from a
    process whose clock was off). Every backend's writes follow this.
    """
    if current is None:
        values: dict[str, Any] = {"created_at": now}
        seq = 1
    else:
        values = {}
        seq = current.seq + 1
    values.update(fields)
    if current is not None and "meta" in fields:
        values["meta"] = {**current.meta, **fields["meta"]}
    values["seq"] = seq
    values["updated_at"] = now
    status = values.get("status")
    if status is not None:
        status = BatchStatus(status) if not isinstance(status, BatchStatus) else status
        started = values.get("started_at", current.started_at if current else None)
        completed = values.get("completed_at", current.completed_at if current else None)
        if status is BatchStatus.RUNNING and started is None:
            values["started_at"] = now
        if status.is_finished and completed is None:
            values["completed_at"] = now
        if status is BatchStatus.COMPLETED and "error_message" not in fields:
            values["error_message"] = None
    if current is None:
        return BatchJob(id=job_id, **values)
    return current.replace(**values)


def _finished_order(job: BatchJob) -> tuple[datetime, str]:
    return (finished_at(job) or datetime.min.replace(tzinfo=utc_now().tzinfo), job.id)
