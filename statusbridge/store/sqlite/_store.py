"""SqliteStore, the ``sqlite://`` backend of ``StatusStore`` (shelf: ``_shelf``; a load: ``_load``).

One SQLite file holds everything (``sqlite:///relative.db``, ``sqlite:////abs.db``):

- ``jobs(id, doc)``: each job's schema-1 JSON document as text, so any SQLite
  client can read the jobs (``SELECT json_extract(doc, '$.status') FROM jobs``);
- ``changes(pos, id)``: the ordered change log a cache follows. Triggers on
  ``jobs`` append to it, so a write by any program (the ``sqlite3`` shell too)
  is logged. ``pos`` is the rowid: one past the newest entry, and trimming
  keeps the last ``log_keep`` entries, never the newest, so it never goes back
  or repeats (not AUTOINCREMENT, whose counter row would be one more page
  written per commit). The only gaps are entries trimmed away; a cache that
  sees the newest go back (the log emptied by hand) reloads in full;
- ``batches(name, doc)``: the shelf of batch definitions (``BatchManager``).

Writes: WAL mode, one ``BEGIN IMMEDIATE`` transaction per ``update``/``modify``
(read, merge with the shared ``merged()``, write; the trigger logs it), shared by
the writes of other threads that queued meanwhile (``_group``); a job whose row
this store wrote last skips the read: one ``UPDATE ... WHERE doc = <that text>``,
which SQLite runs under its write lock, so a row changed since by anyone makes the
write the full transaction instead (``SqliteStore._modify_known``). A busy
timeout of ``lock_timeout`` (beyond it: ``LockTimeout``); ``durable=True`` is
``synchronous=FULL``, else ``NORMAL`` (a commit survives a crash of the process,
not of the machine). Writes go through one connection per store, used under a
lock; reads through read connections of their own (``_database``).

A file that may not be written (permissions, a read-only mount) is opened read
only (``mode=ro``, or ``immutable=1`` where SQLite cannot even share its read
marks), so a monitor works; the first write raises ``PermissionError`` naming
the file. A file that is not SQLite raises ``UnusableDatabase`` naming it.
Not for network file systems (NFS, SMB): SQLite's locking is not safe there.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob, validate_job_id
from statusbridge.record._codec import job_text, job_text_as_stored
from statusbridge.record._model import utc_now
from statusbridge.record._ranges import AT_LEAST_ONE
from statusbridge.store._files import DEFAULT_MAX_BYTES
from statusbridge.store._location import SqliteLocation, parse_location
from statusbridge.store._store import ScanReport, StatusStore, merged, overwrite_refused
from statusbridge.store.sqlite._database import Database
from statusbridge.store.sqlite._load import decode_row, load, newest_position

__all__ = ["DEFAULT_LOG_KEEP", "SqliteStore"]

logger = logging.getLogger(__name__)

DEFAULT_LOG_KEEP = 10_000
"""Change-log entries a database keeps; a cache further behind than this reloads in full."""

_TRIM_EVERY = 64  # a store trims the change log at every this many writes (and at deletes)
_KNOWN_MAX = 4096  # jobs whose last document a store keeps (see SqliteStore.modify)


class _Changed:
    """``_modify_known``'s answer when the row is no longer the one this store wrote."""


_CHANGED = _Changed()


class SqliteStore(StatusStore):
    """Atomic writes of one JSON document per job in a SQLite database.

    Open it as ``StatusStore("sqlite:///status.db")`` (relative to the working
    directory) or ``StatusStore("sqlite:////srv/app/status.db")``. The database and
    its folder are made at the first use if missing (``file_mode``, ``dir_mode``).
    ``log_keep`` is how many change-log entries are kept for caches.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | SqliteLocation = "batch_status",
        *,
        durable: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float = 10.0,
        file_mode: int | None = 0o600,
        dir_mode: int | None = 0o700,
        clock: Callable[[], datetime] = utc_now,
        log_keep: int | None = DEFAULT_LOG_KEEP,
    ) -> None:
        where = parse_location(directory)
        if not isinstance(where, SqliteLocation):
            raise TypeError(f"not a sqlite:// location: {directory!r}")
        log_keep = DEFAULT_LOG_KEEP if log_keep is None else log_keep
        AT_LEAST_ONE.check("max_bytes", max_bytes)
        AT_LEAST_ONE.check("log_keep", log_keep)
        self.where = where
        self.durable = durable
        self.max_bytes = max_bytes
        self.log_keep = log_keep
        self._clock = clock
        self._db = Database(
            where,
            timeout=10.0,
            durable=durable,
            dir_mode=0o700 if dir_mode is None else dir_mode,
            file_mode=0o600 if file_mode is None else file_mode,
        )
        self.lock_timeout = lock_timeout  # validated by the property, then given to SQLite
        # Per job: the document this store last wrote or read, and its record. A write
        # that finds the same text in the row skips decoding it (used under the db lock).
        self._known: dict[str, tuple[str, BatchJob]] = {}
        # The log is trimmed at every _TRIM_EVERY-th write of this store, counted from a
        # random start: many short-lived writers still trim it, one write in _TRIM_EVERY.
        self._writes = random.randrange(_TRIM_EVERY)

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for the database (another writer); ``math.inf``: forever."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, value: float) -> None:
        StatusStore.lock_timeout.fset(self, value)  # type: ignore[attr-defined]
        self._db.set_timeout(self._lock_timeout)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.where.path

    @property
    def location(self) -> str:
        return self.where.absolute_url()

    @property
    def label(self) -> str:
        return self.where.url

    @property
    def readonly(self) -> bool:
        """Whether the database was opened read-only (known after the first use)."""
        return self._db.readonly

    def connection(self) -> sqlite3.Connection:
        """A connection of this store's (for tools and tests); do not use it across threads."""
        with self._db.lock:
            return self._db.connection()

    def __repr__(self) -> str:
        return f"StatusStore({self.where.url!r}, durable={self.durable})"

    def close(self) -> None:
        """Close the connection (a later call reopens it). May be called twice."""
        self._db.close()

    # -- reads -----------------------------------------------------------------------
    def read(self, job_id: str) -> BatchJob | None:
        """The job's record, None if there is none; InvalidRecordError if it is not valid."""
        validate_job_id(job_id)
        with self._db.reading() as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        known = self._known.get(job_id)
        if known is not None and known[0] == row[0]:
            return known[1]  # the row this store wrote last: nothing to decode
        return decode_row(job_id, row[0])

    def scan_report(self) -> ScanReport:
        """Every valid record, and for every invalid one (``<id>.json``) the reason."""
        return ScanReport.of(self.load()[1])

    def load(self) -> tuple[int, dict[str, BatchJob | InvalidRecordError]]:
        """(change-log position, every record) read in one transaction: what a cache starts from."""
        with self._db.reading() as conn:
            return load(conn)

    # -- writes ----------------------------------------------------------------------
    def update(self, job_id: str, **fields: Any) -> BatchJob:
        self._check_fields(fields)
        job = self._modify(job_id, lambda current: fields, checked=True)
        assert job is not None
        return job

    update.__doc__ = StatusStore.update.__doc__

    def modify(
        self, job_id: str, change: Callable[[BatchJob | None], dict[str, Any] | None]
    ) -> BatchJob | None:
        """Conditional read-modify-write, atomic against every other writer.

        "Only if still PENDING" cannot race with another writer anywhere: either
        ``change(current)`` runs inside a ``BEGIN IMMEDIATE`` transaction, or (a row
        this store wrote last) its result is written only if the row is still the
        one ``change`` saw. ``change`` may then be called a second time, on the row
        another writer left, as on Redis.
        """
        return self._modify(job_id, change, checked=False)

    def modify_many(
        self, changes: Sequence[tuple[str, Callable[[BatchJob | None], dict[str, Any] | None]]]
    ) -> list[BatchJob | Exception | None]:
        """As ``StatusStore.modify_many``, in one transaction (with any other thread's
        writes waiting meanwhile); a write whose ``change`` raises fails alone."""
        items = [
            (f"job {job_id!r}", partial(self._write_valid_id, job_id, change))
            for job_id, change in changes
        ]
        outcomes: list[BatchJob | Exception | None] = self._db.grouped.run_many(items)
        return outcomes

    def _modify(
        self,
        job_id: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        *,
        checked: bool,
    ) -> BatchJob | None:
        """``modify``; ``checked``: what ``change`` returns needs no ``_check_fields``."""
        validate_job_id(job_id)
        what = f"job {job_id!r}"
        # Alone, as before; with other threads' writes waiting meanwhile, in one
        # transaction with them (``_group``).
        landed: BatchJob | None = self._db.grouped.run(
            what,
            partial(self._write_in_group, job_id, change, checked),
            alone=partial(self._write_alone, what, job_id, change, checked),
        )
        return landed

    def _write_alone(
        self,
        what: str,
        job_id: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        checked: bool,
    ) -> BatchJob | None:
        """One write, the db lock held: the known row's one autocommit statement, else a
        transaction of its own."""
        known = self._known.get(job_id)
        if known is not None and (self._writes + 1) % _TRIM_EVERY:
            conn = self._db.writable(what)
            written = self._modify_known(conn, job_id, known, change, checked=checked)
            if not isinstance(written, _Changed):
                return written
        conn = self._db.begin_held(what)
        try:
            written = self._write(conn, job_id, change, checked=checked)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._db.commit_held(conn, what)
        return written

    def _write_valid_id(
        self,
        job_id: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        conn: sqlite3.Connection,
    ) -> BatchJob | None:
        validate_job_id(job_id)  # (in the group: a bad id fails its own write only)
        return self._write_in_group(job_id, change, False, conn)

    def _write_in_group(
        self,
        job_id: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        checked: bool,
        conn: sqlite3.Connection,
    ) -> BatchJob | None:
        """One write inside a group's transaction (``conn``)."""
        known = self._known.get(job_id)
        if known is not None and (self._writes + 1) % _TRIM_EVERY:
            written = self._modify_known(conn, job_id, known, change, checked=checked)
            if not isinstance(written, _Changed):
                return written
        return self._write(conn, job_id, change, checked=checked)

    def _modify_known(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        known: tuple[str, BatchJob],
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        *,
        checked: bool,
    ) -> BatchJob | _Changed | None:
        """``_modify`` of a job whose row this store wrote last, without reading it first.

        ``change`` decides on the remembered record; the write is one ``UPDATE ... WHERE
        doc = <the remembered text>`` (alone: in autocommit), which SQLite checks under its
        write lock, so what lands is what a locked read, merge and write would have made.
        ``_CHANGED`` when the row is another now (another writer, a hand edit, a replaced
        database): the caller then reads the row and calls ``change`` again, as a Redis
        store does after losing a race. Every ``_TRIM_EVERY``-th write reads too, to trim.
        """
        text, current = known
        fields = change(current)
        if fields is None:
            # Decided on the remembered record: right only if it is still the row's.
            row = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND doc = ?", (job_id, text)
            ).fetchone()
            return None if row is not None else _CHANGED
        if not checked:
            self._check_fields(fields)
        job = merged(job_id, current, fields, self._clock())
        new_text, stored = self._text_of(job)
        self._remember(job_id, new_text, stored)  # before it lands: see _write
        try:
            landed = conn.execute(
                "UPDATE jobs SET doc = ? WHERE id = ? AND doc = ?", (new_text, job_id, text)
            ).rowcount
        except sqlite3.OperationalError as exc:
            self._known.pop(job_id, None)
            raise self._db.translated(exc, f"job {job_id!r}") from None
        if not landed:
            self._known.pop(job_id, None)
            return _CHANGED
        self._writes += 1
        return job

    def _write(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        change: Callable[[BatchJob | None], dict[str, Any] | None],
        *,
        checked: bool,
    ) -> BatchJob | None:
        """The body of ``_modify``'s transaction: the record written, or None."""
        row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        current = None
        known = self._known.get(job_id)
        if row is not None and known is not None and known[0] == row[0]:
            current = known[1]
        elif row is not None:
            try:
                current = decode_row(job_id, row[0])
            except InvalidRecordError as exc:
                raise overwrite_refused(exc, f"job {job_id}") from None
        fields = change(current)
        if fields is None:
            return None
        if not checked:
            self._check_fields(fields)
        job = merged(job_id, current, fields, self._clock())
        text, stored = self._text_of(job)
        if row is None:
            conn.execute("INSERT INTO jobs(id, doc) VALUES (?, ?)", (job_id, text))
        else:
            conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", (text, job_id))
        self._writes += 1
        if self._writes % _TRIM_EVERY == 0:
            self._trim(conn)
        # Before the commit: a cache of this process may read the row as soon as it
        # lands, and should know it as this store's (a failed commit leaves only a
        # text that matches no row).
        self._remember(job_id, text, stored)
        return job

    def _text_of(self, job: BatchJob) -> tuple[str, BatchJob]:
        """The stored form of ``job``, and the record it decodes to (see
        ``encode_job_as_stored``): ValueError, nothing written, if over ``max_bytes``."""
        text, stored = job_text_as_stored(job)
        # A character is at most 4 bytes in UTF-8: most texts need no encoding to know.
        if len(text) * 4 > self.max_bytes and (size := len(text.encode())) > self.max_bytes:
            raise ValueError(
                f"record of job {job.id!r} would be {size} bytes; the limit is "
                f"{self.max_bytes} (StatusStore(max_bytes=...)); nothing was written"
            )
        return text, stored

    def _remember(self, job_id: str, text: str, job: BatchJob) -> None:
        """The row this store wrote last, so its next update of the job decodes nothing."""
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # bounded; the next update of each decodes its row again
        self._known[job_id] = (text, job)
        if self._write_listeners:
            self._written(job, text)

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Keep the last ``log_keep`` entries of the change log (called in a write).

        Run at every ``_TRIM_EVERY``-th write of a store, so the log may hold up to
        that many entries more per writing store; a cache never misses one for it.
        """
        last = newest_position(conn)
        if last > self.log_keep:
            conn.execute("DELETE FROM changes WHERE pos <= ?", (last - self.log_keep,))

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; False if there was none."""
        validate_job_id(job_id)
        self._known.pop(job_id, None)
        with self._db.writing(f"job {job_id!r}") as conn:
            removed = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
            self._trim(conn)
        return bool(removed)

    def delete_if_unchanged(
        self, jobs: Iterable[BatchJob], *, versions: Mapping[str, bytes] | None = None
    ) -> list[str]:
        """Delete these records unless changed since read (seq, created_at); one transaction."""
        jobs = list(jobs)
        for job in jobs:
            validate_job_id(job.id)
        removed: list[str] = []
        if not jobs:
            return removed
        with self._db.writing("records to remove") as conn:
            for job in jobs:
                created = job.created_at.isoformat() if job.created_at else None
                gone = conn.execute(
                    "DELETE FROM jobs WHERE id = ? AND json_extract(doc, '$.seq') = ? "
                    "AND json_extract(doc, '$.created_at') IS ?",
                    (job.id, job.seq, created),
                ).rowcount
                if gone:
                    removed.append(job.id)
            self._trim(conn)
        return removed

    def _delete_one_if_unchanged(self, job: BatchJob) -> bool:
        return bool(self.delete_if_unchanged([job]))

    def create_absent(self, records: Mapping[str, Mapping[str, Any]]) -> list[BatchJob]:
        """As ``StatusStore.create_absent``, in one transaction."""
        new = self._new_records(records, self._clock())
        texts = {job_id: self._text_of(job) for job_id, (_fields, job) in new.items()}
        created: list[BatchJob] = []
        with self._db.writing(f"{len(new)} new records") as conn:
            ids = list(new)
            present: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)
                present.update(row[0] for row in rows)
            rows_to_add = [(job_id, texts[job_id][0]) for job_id in ids if job_id not in present]
            conn.executemany("INSERT INTO jobs(id, doc) VALUES (?, ?)", rows_to_add)
            self._writes += len(rows_to_add)
            self._trim(conn)
            created = [new[job_id][1] for job_id, _text in rows_to_add]
            for job_id, text in rows_to_add:  # before the commit, as in modify
                self._remember(job_id, text, texts[job_id][1])
        return created

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are (seq included), in one transaction; how many.

        For copying between locations: a record already there with this seq or a
        newer one is left alone, so copying twice changes nothing.
        """
        count = 0
        with self._db.writing("copied records") as conn:
            for job in jobs:
                text = job_text(job)
                row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job.id,)).fetchone()
                if row is not None:
                    try:
                        if decode_row(job.id, row[0]).seq >= job.seq:
                            continue
                    except InvalidRecordError as exc:
                        logger.info(
                            "statusbridge: %s: replacing an invalid record (%s)", job.id, exc
                        )
                    conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", (text, job.id))
                else:
                    conn.execute("INSERT INTO jobs(id, doc) VALUES (?, ?)", (job.id, text))
                count += 1
            self._trim(conn)
        return count
