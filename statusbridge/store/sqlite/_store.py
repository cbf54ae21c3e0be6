"""SqliteStore, the ``sqlite://`` backend of ``StatusStore``, and its shelf.

One SQLite file holds everything (``sqlite:///relative.db``, ``sqlite:////abs.db``):

- ``jobs(id, doc)``: each job's schema-1 JSON document as text, so any SQLite
  client can read the jobs (``SELECT json_extract(doc, '$.status') FROM jobs``);
- ``changes(pos, id)``: the ordered change log a cache follows. Triggers on
  ``jobs`` append to it, so a write by any program (the ``sqlite3`` shell too)
  is logged; ``pos`` is AUTOINCREMENT, so it never goes back or repeats, and the
  only gaps are entries trimmed away (each write keeps the last ``log_keep``);
- ``batches(name, doc)``: the shelf of batch definitions (``BatchManager``).

Writes: WAL mode, one ``BEGIN IMMEDIATE`` transaction per ``update``/``modify``
(read, merge with the shared ``merged()``, write; the trigger logs it), a busy
timeout of ``lock_timeout`` (beyond it: ``LockTimeout``); ``durable=True`` is
``synchronous=FULL``, else ``NORMAL`` (a commit survives a crash of the process,
not of the machine). One connection per store, used under a lock: SQLite runs
one writer at a time anyway, and a thread then waits on a lock, not in a busy loop.

A file that may not be written (permissions, a read-only mount) is opened read
only (``mode=ro``, or ``immutable=1`` where SQLite cannot even share its read
marks), so a monitor works; the first write raises ``PermissionError`` naming
the file. A file that is not SQLite raises ``UnusableDatabase`` naming it.
Not for network file systems (NFS, SMB): SQLite's locking is not safe there.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from statusbridge.errors import InvalidRecordError, LockTimeout, UnusableDatabase
from statusbridge.record import BatchJob, decode_job, encode_job, validate_job_id
from statusbridge.record._model import utc_now
from statusbridge.record._ranges import AT_LEAST_ONE
from statusbridge.store._files import DEFAULT_MAX_BYTES, RECORD_SUFFIX
from statusbridge.store._location import SqliteLocation, parse_location
from statusbridge.store._store import ScanReport, StatusStore, merged

__all__ = ["DEFAULT_LOG_KEEP", "SCHEMA", "SqliteShelf", "SqliteStore", "open_database"]

logger = logging.getLogger(__name__)

DEFAULT_LOG_KEEP = 10_000
"""Change-log entries a database keeps; a cache further behind than this reloads in full."""

SCHEMA = 1  # PRAGMA user_version of a database this release made
_WAL_LIMIT = 4 * 1024 * 1024  # journal_size_limit: the -wal file is cut back to this

_CREATE = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (name TEXT PRIMARY KEY NOT NULL, doc BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS jobs_inserted AFTER INSERT ON jobs
  BEGIN INSERT INTO changes(id) VALUES (new.id); END;
CREATE TRIGGER IF NOT EXISTS jobs_updated AFTER UPDATE ON jobs
  BEGIN INSERT INTO changes(id) VALUES (new.id); END;
CREATE TRIGGER IF NOT EXISTS jobs_deleted AFTER DELETE ON jobs
  BEGIN INSERT INTO changes(id) VALUES (old.id); END;
PRAGMA user_version = 1;
COMMIT;
"""


_TRIM_EVERY = 64  # a store trims the change log at every this many writes (and at deletes)
_KNOWN_MAX = 4096  # jobs whose last document a store keeps (see SqliteStore.modify)
_URI_MODES = {"rw": "?mode=rw", "ro": "?mode=ro", "immutable": "?immutable=1"}


def _busy_ms(timeout: float) -> int:
    return 2**31 - 1 if math.isinf(timeout) else int(timeout * 1000)


def _readonly(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def open_database(
    where: SqliteLocation,
    *,
    create: bool,
    timeout: float = 10.0,
    durable: bool = False,
    dir_mode: int = 0o700,
    file_mode: int = 0o600,
) -> tuple[sqlite3.Connection, bool]:
    """(a connection to ``where``'s database, whether it is read-only).

    With ``create`` a missing database (and its folder) is made. A database this
    process may not write is opened read-only. ``UnusableDatabase`` for a file
    that is not SQLite or has a newer schema.
    """
    path = where.path
    exists = path.exists()
    if not exists and create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, file_mode)
            os.close(fd)
        except PermissionError as exc:
            # Reported below, as SQLite sees it (read-only monitor or a clear error).
            logger.debug("statusbridge: cannot create %s (%s)", path, exc)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    attempts = ["rw", "ro", "immutable"] if writable else ["ro", "immutable"]
    last: sqlite3.Error | None = None
    for mode in attempts:
        uri = (
            path.as_uri() + {"rw": "?mode=rw", "ro": "?mode=ro", "immutable": "?immutable=1"}[mode]
        )
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=timeout if not math.isinf(timeout) else 2**31 / 1000,
                isolation_level=None, check_same_thread=False,
            )  # fmt: skip
        except sqlite3.OperationalError as exc:
            last = exc
            continue
        try:
            _prepare(conn, where, mode=mode, durable=durable, timeout=timeout)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and _readonly(exc):
                last = exc
                continue
            raise UnusableDatabase(
                f"status database {path} is not a SQLite database statusbridge can use: {exc}",
                path,
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn, mode != "rw"
    raise PermissionError(f"cannot open status database {path}: {last}")


def _prepare(
    conn: sqlite3.Connection, where: SqliteLocation, *, mode: str, durable: bool, timeout: float
) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_busy_ms(timeout)}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]  # reads the header: not SQLite?
    if version > SCHEMA:
        raise sqlite3.DatabaseError(
            f"schema {version} is newer than this statusbridge reads ({SCHEMA}); upgrade it"
        )
    if mode == "rw":
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        if version < SCHEMA:
            try:
                conn.executescript(_CREATE)  # one transaction; IF NOT EXISTS: racing makers agree
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = SCHEMA
    else:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens it for real
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == SCHEMA and not {"jobs", "changes", "batches"} <= tables:
        raise sqlite3.DatabaseError("its tables are not statusbridge's (jobs, changes, batches)")


_OPEN: weakref.WeakSet[_Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time stays held in the child forever; the
    # connection is not carried over either (connection() reopens it by pid).
    for database in list(_OPEN):
        database.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Database:
    """One connection and the lock it is used under; reopened after fork or close."""

    def __init__(
        self,
        where: SqliteLocation,
        *,
        timeout: float,
        durable: bool = False,
        dir_mode: int = 0o700,
        file_mode: int = 0o600,
    ) -> None:
        self.where = where
        self.timeout = timeout
        self.durable = durable
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._identity: tuple[int, int] | None = None
        self.readonly = False
        _OPEN.add(self)

    def connection(self) -> sqlite3.Connection:
        """Called holding ``lock``.

        Also when the file at the path is no longer the one open (deleted, or replaced
        by another): writes must go where every other process looks, never into an
        unlinked file. One stat per use.
        """
        if self._conn is not None and self._pid == os.getpid():
            try:
                st = os.stat(self.where.path)
                same = (st.st_dev, st.st_ino) == self._identity
            except OSError:
                same = False
            if same:
                return self._conn
            logger.info("statusbridge: %s is another file now; reopening", self.where.path)
            self._conn.close()
            self._conn = None
        # A connection inherited through fork is dropped, never closed or used here.
        self._conn, self.readonly = open_database(
            self.where, create=True, timeout=self.timeout, durable=self.durable,
            dir_mode=self.dir_mode, file_mode=self.file_mode,
        )  # fmt: skip
        self._pid = os.getpid()
        try:
            st = os.stat(self.where.path)
            self._identity = (st.st_dev, st.st_ino)
        except OSError:
            self._identity = None
        return self._conn

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        with self.lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.execute(f"PRAGMA busy_timeout = {_busy_ms(timeout)}")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (autocommit: each statement its own snapshot)."""
        if not self.lock.acquire(timeout=-1 if math.isinf(self.timeout) else self.timeout):
            raise LockTimeout("(read)", self.timeout, str(self.where.path))
        try:
            yield self.connection()
        finally:
            self.lock.release()

    @contextmanager
    def writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if the body raises).

        ``LockTimeout`` naming ``what`` when another writer holds the database
        beyond the timeout; ``PermissionError`` naming the file when it is read-only.
        """
        if not self.lock.acquire(timeout=-1 if math.isinf(self.timeout) else self.timeout):
            raise LockTimeout(what, self.timeout, str(self.where.path))
        try:
            conn = self.connection()
            if self.readonly:
                raise PermissionError(
                    f"status database {self.where.path} is read-only here (opened for "
                    f"reading): cannot write {what}"
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._translated(exc, what) from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._translated(exc, what) from None
        finally:
            self.lock.release()

    def _translated(self, exc: sqlite3.OperationalError, what: str) -> Exception:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return LockTimeout(what, self.timeout, str(self.where.path))
        if "readonly" in text or "read-only" in text:
            return PermissionError(f"status database {self.where.path} is read-only: {exc}")
        return exc

    def close(self) -> None:
        with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def __del__(self) -> None:
        # Dropped without close(): closed here (CPython 3.13 warns about an unclosed
        # database left to the connection's own collection). Never a forked child's copy.
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            conn.close()


def decode_row(job_id: str, doc: str | bytes) -> BatchJob:
    """The job of a ``jobs.doc``; InvalidRecordError naming the job if invalid."""
    data = doc.encode() if isinstance(doc, str) else doc
    return decode_job(data, source=f"job {job_id}", expected_id=job_id)


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
        self._db = _Database(
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
        return None if row is None else decode_row(job_id, row[0])

    def scan(self) -> dict[str, BatchJob]:
        """Every valid record; invalid ones are skipped (``scan_report`` says why)."""
        return self.scan_report().jobs

    def scan_report(self) -> ScanReport:
        """Every valid record, and for every invalid one (``<id>.json``) the reason."""
        jobs: dict[str, BatchJob] = {}
        invalid: dict[str, str] = {}
        for job_id, outcome in self.load()[1].items():
            if isinstance(outcome, BatchJob):
                jobs[job_id] = outcome
            else:
                invalid[f"{job_id}{RECORD_SUFFIX}"] = outcome.reason
        return ScanReport(jobs, invalid)

    def load(self) -> tuple[int, dict[str, BatchJob | InvalidRecordError]]:
        """(change-log position, every record) read in one transaction: what a cache starts from."""
        with self._db.reading() as conn:
            return load(conn)

    # -- writes ----------------------------------------------------------------------
    def modify(
        self, job_id: str, change: Callable[[BatchJob | None], dict[str, Any] | None]
    ) -> BatchJob | None:
        """Conditional read-modify-write in one ``BEGIN IMMEDIATE`` transaction.

        ``change(current)`` runs while this process holds the database's write lock,
        so "only if still PENDING" cannot race with another writer anywhere.
        """
        validate_job_id(job_id)
        with self._db.writing(f"job {job_id!r}") as conn:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            current = None
            known = self._known.get(job_id)
            if row is not None and known is not None and known[0] == row[0]:
                current = known[1]
            elif row is not None:
                try:
                    current = decode_row(job_id, row[0])
                except InvalidRecordError as exc:
                    raise InvalidRecordError(
                        f"{exc.reason}; refusing to overwrite it (delete it or fix it first)",
                        source=f"job {job_id}",
                    ) from None
            fields = change(current)
            if fields is None:
                return None
            job, text = self._encoded(job_id, current, fields)
            if row is None:
                conn.execute("INSERT INTO jobs(id, doc) VALUES (?, ?)", (job_id, text))
            else:
                conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", (text, job_id))
            self._writes += 1
            if self._writes % _TRIM_EVERY == 0:
                self._trim(conn)
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # bounded; the next update of each decodes its row again
        self._known[job_id] = (text, job)
        return job

    def _encoded(
        self, job_id: str, current: BatchJob | None, fields: dict[str, Any]
    ) -> tuple[BatchJob, str]:
        """The record ``fields`` make of ``current``, and its row text (checked for size)."""
        self._check_fields(fields)
        job = merged(job_id, current, fields, self._clock())
        data = encode_job(job)
        if len(data) > self.max_bytes:
            raise ValueError(
                f"record of job {job_id!r} would be {len(data)} bytes; the limit is "
                f"{self.max_bytes} (StatusStore(max_bytes=...)); nothing was written"
            )
        return job, data.decode().rstrip("\n")

    def create_many(self, records: Mapping[str, dict[str, Any]]) -> list[BatchJob]:
        """Create each of these records unless it exists, all in one transaction."""
        for job_id in records:
            validate_job_id(job_id)
        created: list[tuple[BatchJob, str]] = []
        with self._db.writing(f"{len(records)} new records") as conn:
            for job_id, fields in records.items():
                if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
                    continue
                job, text = self._encoded(job_id, None, fields)
                conn.execute("INSERT INTO jobs(id, doc) VALUES (?, ?)", (job_id, text))
                created.append((job, text))
            self._writes += len(created)
            self._trim(conn)
        if len(self._known) + len(created) >= _KNOWN_MAX:
            self._known.clear()  # bounded; the next update of each decodes its row again
        for job, text in created:
            self._known[job.id] = (text, job)
        return [job for job, _ in created]

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Keep the last ``log_keep`` entries of the change log (called in a write).

        Run at every ``_TRIM_EVERY``-th write of a store, so the log may hold up to
        that many entries more per writing store; a cache never misses one for it.
        """
        cur = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        last = 0 if cur is None else int(cur[0])
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

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are (seq included), in one transaction; how many.

        For copying between locations: a record already there with this seq or a
        newer one is left alone, so copying twice changes nothing.
        """
        count = 0
        with self._db.writing("copied records") as conn:
            for job in jobs:
                text = encode_job(job).decode().rstrip("\n")
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


def load(conn: sqlite3.Connection) -> tuple[int, dict[str, BatchJob | InvalidRecordError]]:
    """(change-log position, every record), in one read transaction of ``conn``."""
    conn.execute("BEGIN")
    try:
        cur = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        rows = conn.execute("SELECT id, doc FROM jobs").fetchall()
    finally:
        conn.execute("COMMIT")
    records: dict[str, BatchJob | InvalidRecordError] = {}
    for job_id, doc in rows:
        try:
            records[job_id] = decode_row(job_id, doc)
        except InvalidRecordError as exc:
            records[job_id] = exc
    return (0 if cur is None else int(cur[0])), records


class SqliteShelf:
    """Batch definitions as rows of ``batches`` in the status database."""

    @classmethod
    def open(cls, where: SqliteLocation, *, create: bool = True) -> SqliteShelf:
        """The registered opener (the database is made at first use)."""
        return cls(where)

    def __init__(self, where: SqliteLocation, *, lock_timeout: float = 10.0) -> None:
        self.where = where
        self.label = where.url
        self._db = _Database(where, timeout=lock_timeout)

    def get(self, name: str) -> bytes | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT doc FROM batches WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def names(self) -> list[str]:
        with self._db.reading() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM batches ORDER BY name")]

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        with self._db.writing(f"batch {name!r}") as conn:
            if exclusive:
                try:
                    conn.execute("INSERT INTO batches(name, doc) VALUES (?, ?)", (name, data))
                except sqlite3.IntegrityError:
                    raise FileExistsError(f"{self.label}: {name} exists") from None
            else:
                conn.execute(
                    "INSERT INTO batches(name, doc) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                    (name, data),
                )

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        with self._db.writing(f"batch {name!r}") as conn:
            done = conn.execute(
                "UPDATE batches SET doc = ? WHERE name = ? AND doc = ?", (data, name, expected)
            ).rowcount
        return bool(done)

    def remove(self, name: str) -> None:
        with self._db.writing(f"batch {name!r}") as conn:
            conn.execute("DELETE FROM batches WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()
