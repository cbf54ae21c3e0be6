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
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import redis

from statusbridge.errors import InvalidRecordError, LockTimeout
from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.record._frozen import thaw
from statusbridge.record._model import utc_now
from statusbridge.record._ranges import AT_LEAST_ONE
from statusbridge.store._files import DEFAULT_MAX_BYTES
from statusbridge.store._location import DEFAULT_STREAM_MAXLEN, RedisLocation, parse_location
from statusbridge.store._store import ScanReport, StatusStore, merged
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

    def load(self) -> tuple[int, str, dict[str, BatchJob | InvalidRecordError]]:
        """(feed counter, feed id, every record) in one atomic step: what a cache follows from."""
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
        for raw_id, data in zip(raw[2::2], raw[3::2], strict=True):
            job_id = raw_id.decode(errors="replace")
            try:
                records[job_id] = decode_doc(job_id, data)
            except InvalidRecordError as exc:
                records[job_id] = exc
        return counter, last_id, records

    # -- writes ----------------------------------------------------------------------
    def update(self, job_id: str, **fields: Any) -> BatchJob:
        """One Lua call: fields replace, ``meta`` merges, ``seq`` + 1, a feed entry.

        If this store wrote or read the job last (the server checks the hash's
        fingerprint), the new record is worked out here and the server only applies
        it; otherwise the server works it out and sends it back.
        """
        validate_job_id(job_id)
        self._check_fields(fields)
        now = self._clock()
        known = self._known.get(job_id)
        expected = None
        if known is not None:
            expected = merged(job_id, known[1], fields, now)  # validates as on files
            args = self._write_args(job_id, fields, now, known, expected)
        else:
            args = self._write_args(job_id, fields, now)
        try:
            reply = translated(
                self.where, lambda: self._write(keys=self.keys.writes(job_id), args=args)
            )
        except redis.ResponseError as exc:
            if not str(exc).startswith("INVALID "):
                raise
            self._known.pop(job_id, None)
            raise InvalidRecordError(
                f"{str(exc)[8:]}; refusing to overwrite it (delete it or fix it first)",
                source=f"job {job_id}",
            ) from None
        return self._written(job_id, reply, expected)

    def _written(self, job_id: str, reply: list[bytes], expected: BatchJob | None) -> BatchJob:
        """The job a write script's reply means; remembered with its fingerprint."""
        if len(reply) == 2:
            job = decode_doc(job_id, reply[1])
        else:
            assert expected is not None  # a short reply answers a change sent whole
            job = expected
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # (no iteration: other threads may write meanwhile)
        self._known[job_id] = (reply[0], job)
        return job

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
                raise InvalidRecordError(
                    f"{exc.reason}; refusing to overwrite it (delete it or fix it first)",
                    source=f"job {job_id}",
                ) from None
        fields = change(current)
        if fields is None:
            return None
        self._check_fields(fields)
        args = self._write_args(job_id, fields)
        pipe.multi()
        self._write(keys=self.keys.writes(job_id), args=args, client=pipe)
        return self._written(job_id, pipe.execute()[-1], None)

    def _write_args(
        self,
        job_id: str,
        fields: dict[str, Any],
        now: datetime | None = None,
        known: tuple[bytes, BatchJob] | None = None,
        expected: BatchJob | None = None,
    ) -> list[str | bytes | int]:
        """ARGV of the write script (see WRITE_SCRIPT): with ``known`` (fingerprint and
        record the caller holds) and ``expected`` (the update worked out from it), the
        rest of the change too, which the server applies if its record is the one known."""
        when = _json((self._clock() if now is None else now).isoformat())
        probe = BatchJob(id=job_id, **fields) if expected is None else expected  # validates
        pairs: list[str | bytes | int] = []
        size = 0
        for name in fields:
            if name == "meta":
                for key, value in fields["meta"].items():
                    text = _json(thaw(value))
                    size += len(text)
                    pairs += [f"m:{_json(key)}", text]
                continue
            value = probe.reported_progress if name == "progress" else getattr(probe, name)
            text = _json(_plain(value))
            size += len(text)
            pairs += [name, text]
        if size > self.max_bytes:
            raise ValueError(
                f"record of job {job_id!r} would be over {size} bytes; the limit is "
                f"{self.max_bytes} (StatusStore(max_bytes=...)); nothing was written"
            )
        head: list[str | bytes | int] = [job_id, _json(job_id), when, self.stream_maxlen]
        if known is None or expected is None:
            return [*head, "", len(pairs), *pairs]
        rest: list[str | bytes | int] = ["updated_at", when, "seq", expected.seq]
        for name in ("started_at", "completed_at"):
            if name not in fields and getattr(expected, name) != getattr(known[1], name):
                rest += [name, when]  # set by the status (see merged); fields hold expected's
        return [*head, known[0], len(pairs), *pairs, *rest]

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are (one PUT_SCRIPT call each), unless already as new."""
        from statusbridge.record._codec import job_to_dict  # (copying only)

        written = 0
        for job in jobs:
            validate_job_id(job.id)
            doc = job_to_dict(job)
            pairs: list[str] = []
            for name, value in doc.items():
                if name == "schema":
                    continue
                if name == "meta":
                    for key, item in value.items():
                        pairs += [f"m:{_json(key)}", _json(item)]
                else:
                    pairs += [name, _json(value)]
            keys = self.keys.writes(job.id)
            args: list[str | int] = [job.id, self.stream_maxlen, job.seq, *pairs]
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


def _plain(value: Any) -> Any:
    """A field's value as job_to_dict writes it (ISO-8601 times, status by value, plain JSON)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BatchStatus):
        return value.value
    return thaw(value)


# One encoder, built once: json.dumps with options builds a new one per call.
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
