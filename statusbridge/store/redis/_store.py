"""RedisStore: the Redis/Valkey backend of ``StatusStore`` (``redis://`` and ``rediss://``).

``update`` is one Lua script (fields replace, meta merges, seq + 1, a feed entry);
``modify`` runs ``change`` between WATCH and MULTI and retries when another
writer got there first, so a conditional write cannot lose an update between
processes on different hosts. Layout of the keys: ``_schema``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import redis

from statusbridge.errors import InvalidRecordError, LockTimeout, RecordVanished
from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.record._codec import job_text_as_stored, job_to_dict, text_as_stored
from statusbridge.record._frozen import thaw
from statusbridge.record._model import FIELD_NAMES, utc_now
from statusbridge.record._ranges import AT_LEAST_ONE
from statusbridge.store._files import DEFAULT_MAX_BYTES
from statusbridge.store._location import DEFAULT_STREAM_MAXLEN, RedisLocation, parse_location
from statusbridge.store._store import ScanReport, StatusStore, merged, overwrite_refused
from statusbridge.store.redis._schema import (
    DELETE_IF_UNCHANGED,
    DELETE_SCRIPT,
    LOAD_SCRIPT,
    PUT_SCRIPT,
    READ_SCRIPT,
    WRITE_SCRIPT,
    Keys,
    connect,
    decode_doc,
    translated,
)

__all__ = ["DEFAULT_STREAM_MAXLEN", "RedisStore"]

logger = logging.getLogger(__name__)


_KNOWN_MAX = 4096  # jobs whose last written record a store keeps (for update's short path)


class RedisStore(StatusStore):
    """Atomic writes of one hash per job on a Redis or Valkey server.

    Open it as ``StatusStore("redis://host:6379/0?prefix=app")``. ``durable`` is
    the server's business here (its AOF/RDB settings) and is only recorded;
    ``lock_timeout`` bounds how long ``modify`` retries against other writers.
    An unreachable server raises ``BackendUnavailable`` (within 10 s).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | RedisLocation = "batch_status",
        *,
        durable: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        stream_maxlen: int | None = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        stream_maxlen = DEFAULT_STREAM_MAXLEN if stream_maxlen is None else stream_maxlen
        where = parse_location(directory)
        if not isinstance(where, RedisLocation):
            raise TypeError(f"not a redis:// location: {directory!r}")
        AT_LEAST_ONE.check("max_bytes", max_bytes)
        AT_LEAST_ONE.check("stream_maxlen", stream_maxlen)
        self.where = where
        self.durable = durable
        self.max_bytes = max_bytes
        self.lock_timeout = lock_timeout
        self.stream_maxlen = stream_maxlen
        self._clock = clock
        self.keys = Keys(where)
        self._client = connect(where)
        self._write = self._client.register_script(WRITE_SCRIPT)
        self._delete = self._client.register_script(DELETE_SCRIPT)
        self._delete_unchanged = self._client.register_script(DELETE_IF_UNCHANGED)
        self._load = self._client.register_script(LOAD_SCRIPT)
        self._read = self._client.register_script(READ_SCRIPT)
        self._put = self._client.register_script(PUT_SCRIPT)
        # Per job: the fingerprint of the hash this store last wrote, and its record.
        self._known: dict[str, tuple[bytes, BatchJob]] = {}

    @property
    def location(self) -> str:
        return self.where.url

    @property
    def label(self) -> str:
        return str(self.where)

    @property
    def client(self) -> redis.Redis:
        """The redis-py client (for tools and tests that need the server itself)."""
        return self._client

    def __repr__(self) -> str:
        return f"StatusStore({str(self.where)!r})"

    def close(self) -> None:
        """Close this store's connections (a later call reconnects). May be called twice."""
        self._client.close()

    # -- reads -----------------------------------------------------------------------
    def read(self, job_id: str) -> BatchJob | None:
        """The job's record from the server, None if there is none.

        Raises InvalidRecordError if the hash exists but is not a valid record.
        """
        key = self.keys.job(validate_job_id(job_id))
        data = translated(self.where, lambda: self._read(keys=[key]))
        return None if data is None else decode_doc(job_id, data)

    def scan_report(self) -> ScanReport:
        """Every valid record, and for every invalid one (``<id>.json``) the reason."""
        return ScanReport.of(self.load()[2])

    def load(
        self,
    ) -> tuple[int, str, dict[str, BatchJob | InvalidRecordError], tuple[str, ...]]:
        """(feed counter, feed id, every record, the ids whose records vanished) in one
        atomic step: what a cache follows from. A vanished record's id is still in the
        ids set, which only a delete empties: its hash went without one (evicted)."""
        raw = translated(
            self.where,
            lambda: self._load(
                keys=[self.keys.ids, self.keys.feed, self.keys.feed_n],
                args=[self.keys.job_prefix],
            ),
        )
        counter = int(raw[0])
        last_id = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        records: dict[str, BatchJob | InvalidRecordError] = {}
        vanished: list[str] = []
        for raw_id, data in zip(raw[2::2], raw[3::2], strict=True):
            job_id = raw_id.decode(errors="replace")
            if data is None:
                vanished.append(job_id)
                continue
            try:
                records[job_id] = decode_doc(job_id, data)
            except InvalidRecordError as exc:
                records[job_id] = exc
        return counter, last_id, records, tuple(sorted(vanished))

    # -- writes ----------------------------------------------------------------------
    def update(self, job_id: str, **fields: Any) -> BatchJob:
        """One atomic write: fields replace, ``meta`` merges, ``seq`` + 1, a feed entry.

        The new record is worked out here (``merged``, as on every backend) from the
        record this store holds, and the server applies it only if its hash is still
        that record (its fingerprint says so); otherwise it sends its record back, and
        the change is merged into that one and tried again. So a record that cannot be
        decoded is refused before anything is written, and numbers stay exact.
        RecordVanished if the job's hash went without a delete (evicted).
        """
        validate_job_id(job_id)
        self._check_fields(fields)
        now = self._clock()
        deadline = time.monotonic() + self.lock_timeout
        known: tuple[bytes, BatchJob | None] | None = self._known.get(job_id)
        while True:
            current = None if known is None else known[1]
            expected = _as_stored(merged(job_id, current, fields, now))  # validates as on files
            args = self._write_args(job_id, fields, expected, current, known)
            reply = translated(
                self.where,
                lambda: self._write(keys=self.keys.writes(job_id), args=args),  # noqa: B023
            )
            known = self._outcome(job_id, reply, expected)
            if known is None:
                return expected
            if time.monotonic() > deadline:  # other writers won every time
                raise LockTimeout(job_id, self.lock_timeout, self.keys.job(job_id))

    def _outcome(
        self, job_id: str, reply: list[bytes], expected: BatchJob
    ) -> tuple[bytes, BatchJob | None] | None:
        """None once ``expected`` is written (remembered with its fingerprint); else
        what to merge into next: the server's record and fingerprint, or (b'', None)
        for no record. RecordVanished, InvalidRecordError: nothing was written."""
        head = reply[0]
        if head == b"vanished":
            self._known.pop(job_id, None)
            raise RecordVanished(job_id, str(self.where))
        if head == b"absent":  # deleted since we wrote it: created anew, as update does
            self._known.pop(job_id, None)
            return b"", None
        if head == b"stale":
            self._known.pop(job_id, None)
            try:
                current = decode_doc(job_id, reply[2])
            except InvalidRecordError as exc:
                raise overwrite_refused(exc, f"job {job_id}") from None
            return reply[1], current
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # (no iteration: other threads may write meanwhile)
        self._known[job_id] = (head, expected)
        if len(reply) > 1:  # the feed entry's number: what this process's cache recognises
            self._written(expected, int(reply[1]))
        return None

    def modify(
        self, job_id: str, change: Callable[[BatchJob | None], dict[str, Any] | None]
    ) -> BatchJob | None:
        """Conditional read-modify-write: ``change(current)`` returns the fields to set, or None.

        Optimistic: the job's key is WATCHed while ``change`` decides, and the write
        is retried (``change`` called again) if another writer changed the job
        meanwhile. LockTimeout after ``lock_timeout`` seconds of losing.
        """
        key = self.keys.job(validate_job_id(job_id))
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    return translated(
                        self.where, lambda: self._modify_once(pipe, job_id, key, change)
                    )
                except redis.WatchError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(job_id, self.lock_timeout, key) from None
                    time.sleep(delay)  # back off from the writers we lost to
                    delay = min(delay * 2, 0.02)
                finally:
                    pipe.reset()

    def _modify_once(
        self,
        pipe: Any,
        job_id: str,
        key: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
    ) -> BatchJob | None:
        pipe.watch(key)
        data = self._read(keys=[key], client=pipe)  # (executed at once: WATCH mode)
        current = None
        if data is not None:
            try:
                current = decode_doc(job_id, data)
            except InvalidRecordError as exc:
                raise overwrite_refused(exc, f"job {job_id}") from None
        fields = change(current)
        if fields is None:
            return None
        self._check_fields(fields)
        expected = _as_stored(merged(job_id, current, fields, self._clock()))
        args = self._write_args(job_id, fields, expected, current, None)
        pipe.multi()
        self._write(keys=self.keys.writes(job_id), args=args, client=pipe)
        outcome = self._outcome(job_id, pipe.execute()[-1], expected)
        assert outcome is None, outcome  # WATCH: the record is the one read, or absent
        return expected

    def _write_args(
        self,
        job_id: str,
        fields: dict[str, Any],
        expected: BatchJob,
        current: BatchJob | None,
        known: tuple[bytes, BatchJob | None] | None,
    ) -> list[str | bytes | int]:
        """ARGV of the write script (see WRITE_SCRIPT) turning ``current`` into ``expected``.

        ``known``: the fingerprint of ``current`` (the server applies the change only
        to that record); None: the caller WATCHes the key. No ``current``: the whole
        record, which the server writes only where there is none.
        """
        pairs: list[str | bytes | int] = []
        if current is None:
            pairs = _pairs(job_to_dict(expected))
        else:
            for name in FIELD_NAMES:
                if name == "meta":
                    for key in fields.get("meta", {}):
                        key = text_as_stored(key)  # noqa: PLW2901 - as ``expected`` has it
                        pairs += [f"m:{_json(key)}", _json(thaw(expected.meta[key]))]
                elif name in fields or getattr(expected, name) != getattr(current, name):
                    # ... or set by the update: seq, updated_at, what the status implies
                    value = getattr(expected, name)
                    if name == "progress":
                        value = expected.reported_progress
                    pairs += [name, _json(_plain(value))]
        size = sum(len(text) for text in pairs[1::2] if isinstance(text, str))
        if size > self.max_bytes:
            raise ValueError(
                f"record of job {job_id!r} would be over {size} bytes; the limit is "
                f"{self.max_bytes} (StatusStore(max_bytes=...)); nothing was written"
            )
        if current is None:
            return [job_id, self.stream_maxlen, "new", *pairs]
        return [job_id, self.stream_maxlen, "*" if known is None else known[0], *pairs]

    def create_absent(self, records: Mapping[str, Mapping[str, Any]]) -> list[BatchJob]:
        """As ``StatusStore.create_absent``, in one round trip (a pipeline of creates).

        The server writes each record only where there is none. RecordVanished, after
        the others are created, if a job's record went without a delete (evicted).
        """
        new = self._new_records(records, self._clock())
        calls = [
            (job_id, stored, self._write_args(job_id, fields, stored, None, None))
            for job_id, (fields, job) in new.items()
            if (stored := _as_stored(job))
        ]

        def send() -> list[Any]:
            with self._client.pipeline(transaction=False) as pipe:
                for job_id, _job, args in calls:
                    self._write(keys=self.keys.writes(job_id), args=args, client=pipe)
                return list(pipe.execute())

        created: list[BatchJob] = []
        vanished: RecordVanished | None = None
        for (job_id, job, _args), reply in zip(calls, translated(self.where, send), strict=True):
            if reply[0] == b"stale":
                continue  # it has a record: left alone
            try:
                self._outcome(job_id, reply, job)
            except RecordVanished as exc:
                vanished = exc
                continue
            created.append(job)
        if vanished is not None:
            raise vanished
        return created

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are (one PUT_SCRIPT call each), unless already as new."""
        written = 0
        for job in jobs:
            validate_job_id(job.id)
            keys = self.keys.writes(job.id)
            args = [job.id, self.stream_maxlen, job.seq, *_pairs(job_to_dict(job))]
            done = translated(self.where, lambda: self._put(keys=keys, args=args))  # noqa: B023
            self._known.pop(job.id, None)
            written += int(done)
        return written

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; False if there was none."""
        validate_job_id(job_id)
        self._known.pop(job_id, None)
        removed = translated(
            self.where,
            lambda: self._delete(keys=self.keys.writes(job_id), args=[job_id, self.stream_maxlen]),
        )
        return bool(removed)

    def _delete_one_if_unchanged(self, job: BatchJob) -> bool:
        self._known.pop(job.id, None)
        created = _json(job.created_at.isoformat()) if job.created_at else "null"
        removed = translated(
            self.where,
            lambda: self._delete_unchanged(
                keys=self.keys.writes(job.id),
                args=[job.id, self.stream_maxlen, str(job.seq), created],
            ),
        )
        return bool(removed)


def _pairs(doc: dict[str, Any]) -> list[str | bytes | int]:
    """A schema-1 document as the hash's field/value pairs (JSON texts; meta as m:<key>)."""
    pairs: list[str | bytes | int] = []
    for name, value in doc.items():
        if name == "schema":
            continue
        if name == "meta":
            for key, item in value.items():
                pairs += [f"m:{_json(key)}", _json(item)]
        else:
            pairs += [name, _json(value)]
    return pairs


def _as_stored(job: BatchJob) -> BatchJob:
    """``job`` as the server will hold it: a lone surrogate (not UTF-8) becomes U+FFFD, as
    on every backend, instead of failing deep in the client."""
    return job_text_as_stored(job)[1]


def _plain(value: Any) -> Any:
    """A field's value as job_to_dict writes it (ISO-8601 times, status by value, plain JSON)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BatchStatus):
        return value.value
    return thaw(value)


# One encoder, built once: json.dumps with options builds a new one per call.
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
