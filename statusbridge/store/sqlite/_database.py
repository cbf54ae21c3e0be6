"""The SQLite file of the ``sqlite://`` backend: its schema, opening it, and its connections.

``open_database`` makes or opens the file (read-only where it may not be written;
``UnusableDatabase`` for a file that is not SQLite or has a newer schema).
``Database`` is what a store writes and reads through: one writers' connection
used under a lock (SQLite runs one writer at a time anyway, and a thread then waits
on a lock, not in a busy loop), and a few read connections, since in WAL mode a
reader never waits for a writer.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from statusbridge.errors import LockTimeout, UnusableDatabase
from statusbridge.store._location import SqliteLocation
from statusbridge.store.sqlite._group import GroupCommit

__all__ = ["SCHEMA", "Database", "busy_ms", "open_database"]

logger = logging.getLogger(__name__)

SCHEMA = 1  # PRAGMA user_version of a database this release made
_WAL_LIMIT = 4 * 1024 * 1024  # journal_size_limit: the -wal file is cut back to this
# ... and checkpointed when it grows past it. Pages of a new database: a commit of
# update() writes the job's page and the log's page to the -wal whole, and documents are
# small (SQLite's default 4,096 bytes writes four times the bytes for them).
_PAGE_SIZE = 1024

_CREATE = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (pos INTEGER PRIMARY KEY, id TEXT NOT NULL);
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


_URI_MODES = {"rw": "?mode=rw", "ro": "?mode=ro", "immutable": "?immutable=1"}


def busy_ms(timeout: float) -> int:
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
    conn.execute(f"PRAGMA busy_timeout = {busy_ms(timeout)}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]  # reads the header: not SQLite?
    if version > SCHEMA:
        raise sqlite3.DatabaseError(
            f"schema {version} is newer than this statusbridge reads ({SCHEMA}); upgrade it"
        )
    if mode == "rw":
        if version < SCHEMA:
            # Only an empty file takes it, before WAL mode; SQLite ignores it on any other.
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_LIMIT // page_size}")
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


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time stays held in the child forever; the
    # connection is not carried over either (connection() reopens it by pid).
    for database in list(_OPEN):
        database.lock = threading.Lock()
        database.grouped.forget()
        database.forget_readers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_IDLE_READERS = 8  # read connections kept open between reads, per store


class Database:
    """The writers' connection and the lock it is used under, and a few read connections;
    reopened after fork or close."""

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
        # Writes that may share a transaction with those waiting beside them (``_group``).
        self.grouped: GroupCommit[Any] = GroupCommit(self)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._path = os.fspath(where.path)  # stat()ed at every write: no Path conversion
        self._identity = (-1, -1)  # (st_dev, st_ino) of the file open
        self.readonly = False
        # Idle read connections, for the file and generation in _readers_key.
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # held only to take or give back one
        self._readers_key: tuple[int, tuple[int, int], int] | None = None
        self._generation = 0  # close() and set_timeout() retire the idle readers
        _OPEN.add(self)

    def connection(self) -> sqlite3.Connection:
        """Called holding ``lock``.

        Also when the file at the path is no longer the one open (deleted, or replaced
        by another): writes must go where every other process looks, never into an
        unlinked file. One stat per use.
        """
        if self._conn is not None and self._pid == os.getpid():
            try:
                st = os.stat(self._path)
                same = st.st_ino == self._identity[1] and st.st_dev == self._identity[0]
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
            st = os.stat(self._path)
            self._identity = (st.st_dev, st.st_ino)
        except OSError:
            self._identity = (-1, -1)
        return self._conn

    @property
    def lock_wait(self) -> float:
        """The timeout for ``threading.Lock.acquire`` (-1: forever)."""
        return -1 if math.isinf(self.timeout) else self.timeout

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        self._retire_readers()
        with self.lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.execute(f"PRAGMA busy_timeout = {busy_ms(timeout)}")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (autocommit: each statement its own snapshot).

        Not the writers' connection: in WAL mode a reader never waits for a writer, so
        a read (a worker checking its job before it starts) does not queue behind this
        process's writes. Until the database exists, the writers' connection makes it.
        """
        try:
            st = os.stat(self.where.path)
        except OSError:
            st = None
        if st is None or st.st_size == 0:
            if not self.lock.acquire(timeout=self.lock_wait):
                raise LockTimeout("(read)", self.timeout, str(self.where.path))
            try:
                yield self.connection()
            finally:
                self.lock.release()
            return
        key = (os.getpid(), (st.st_dev, st.st_ino), self._generation)
        conn = self._take_reader(key)
        try:
            yield conn
        finally:
            self._give_back(conn, key)

    def _take_reader(self, key: tuple[int, tuple[int, int], int]) -> sqlite3.Connection:
        with self._readers_lock:
            if key != self._readers_key:
                # Another file at the path now, or retired: the idle ones go.
                if self._readers_key is not None and self._readers_key[0] == key[0]:
                    for stale in self._readers:
                        stale.close()
                self._readers, self._readers_key = [], key
            if self._readers:
                return self._readers.pop()
        conn, _readonly = open_database(
            self.where, create=False, timeout=self.timeout, durable=self.durable,
            dir_mode=self.dir_mode, file_mode=self.file_mode,
        )  # fmt: skip
        return conn

    def _give_back(self, conn: sqlite3.Connection, key: tuple[int, tuple[int, int], int]) -> None:
        with self._readers_lock:
            if key == self._readers_key and len(self._readers) < _IDLE_READERS:
                if conn.in_transaction:  # a reader interrupted mid-transaction
                    conn.execute("ROLLBACK")
                self._readers.append(conn)
                return
        conn.close()

    def _retire_readers(self) -> None:
        with self._readers_lock:
            self._generation += 1
            idle, self._readers = self._readers, []
            if self._readers_key is not None and self._readers_key[0] == os.getpid():
                for conn in idle:
                    conn.close()
            self._readers_key = None

    def forget_readers(self) -> None:
        """In a forked child: the parent's read connections are neither used nor closed."""
        self._readers_lock = threading.Lock()
        self._readers, self._readers_key = [], None

    @contextmanager
    def writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if the body raises): ``begin``,
        then ``commit`` or ``rollback``."""
        conn = self.begin(what)
        try:
            yield conn
        except BaseException:
            self.rollback(conn)
            raise
        self.commit(conn, what)

    def begin(self, what: str) -> sqlite3.Connection:
        """Take the lock and ``BEGIN IMMEDIATE``; the caller ends with ``commit`` or ``rollback``.

        ``LockTimeout`` naming ``what`` when another writer holds the database
        beyond the timeout; ``PermissionError`` naming the file when it is read-only.
        """
        lock = self.lock
        if not (lock.acquire(False) or lock.acquire(timeout=self.lock_wait)):
            raise LockTimeout(what, self.timeout, str(self.where.path))
        try:
            return self.begin_held(what)
        except BaseException:
            lock.release()
            raise

    def writable(self, what: str) -> sqlite3.Connection:
        """The writers' connection (the caller holds ``lock``); ``PermissionError`` naming
        the file when it is read-only."""
        conn = self.connection()
        if self.readonly:
            raise PermissionError(
                f"status database {self.where.path} is read-only here (opened for "
                f"reading): cannot write {what}"
            )
        return conn

    def begin_held(self, what: str) -> sqlite3.Connection:
        """``BEGIN IMMEDIATE``, the caller holding ``lock`` (and releasing it after
        ``commit_held``, or a ``ROLLBACK``)."""
        conn = self.writable(what)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self.translated(exc, what) from None
        return conn

    def commit_held(self, conn: sqlite3.Connection, what: str) -> None:
        """``COMMIT`` (``ROLLBACK`` if it fails), the caller holding ``lock``."""
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self.translated(exc, what) from None

    def commit(self, conn: sqlite3.Connection, what: str) -> None:
        """``COMMIT`` the transaction ``begin`` started, and release the lock."""
        try:
            self.commit_held(conn, what)
        finally:
            self.lock.release()

    def rollback(self, conn: sqlite3.Connection) -> None:
        """``ROLLBACK`` the transaction ``begin`` started, and release the lock."""
        try:
            conn.execute("ROLLBACK")
        finally:
            self.lock.release()

    def translated(self, exc: sqlite3.OperationalError, what: str) -> Exception:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return LockTimeout(what, self.timeout, str(self.where.path))
        if "readonly" in text or "read-only" in text:
            return PermissionError(f"status database {self.where.path} is read-only: {exc}")
        return exc

    def close(self) -> None:
        self._retire_readers()
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
        key = self._readers_key
        if key is not None and key[0] == os.getpid():
            for reader in self._readers:
                reader.close()
