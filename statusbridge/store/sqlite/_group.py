"""Group commit: the writes that queue up behind one transaction share the next one.

Worker threads that end their jobs at about the same moment used to take turns at
the store's write lock, one ``BEGIN IMMEDIATE`` ... ``COMMIT`` each. Every turn
costs a commit (a ``-wal`` write, which wakes every cache following the file) and
several hand-offs of the interpreter lock between the threads waiting for it.
Here a thread that gets the lock writes every request waiting at that moment, its
own and the others', in one transaction; a thread whose request was written by
another finds it done when it gets the lock, and returns. A lone writer still
commits alone, at once: nothing waits for company.

Each request's work runs on the thread that holds the lock, in arrival order, so a
later request for the same job reads what the earlier one wrote. Work that raises
before it has written anything fails only its own request; an ``sqlite3.Error``
(or anything raised after a write) rolls the whole group back, and every request
in it fails with that error: nothing of it was written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from statusbridge.errors import LockTimeout

if TYPE_CHECKING:
    from statusbridge.store.sqlite._database import Database

__all__ = ["GroupCommit"]

T = TypeVar("T")


@dataclass(eq=False)
class _Request(Generic[T]):
    what: str  # names the job in errors (``LockTimeout``)
    work: Callable[[sqlite3.Connection], T]
    alone: Callable[[], T] | None
    done: bool = False
    result: T | None = None
    error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # (None is a T of work's)


class GroupCommit(Generic[T]):
    """Runs ``work(conn)`` inside a write transaction shared with what else is waiting."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()  # guards _waiting; never held around the db lock
        self._waiting: list[_Request[T]] = []

    def forget(self) -> None:
        """In a forked child: the parent's waiting threads are not here."""
        self._lock = threading.Lock()
        self._waiting = []

    def run(
        self,
        what: str,
        work: Callable[[sqlite3.Connection], T],
        *,
        alone: Callable[[], T] | None = None,
    ) -> T:
        """``work(conn)``'s result once its transaction is committed; raises as ``work``
        did, or as the transaction failed (``LockTimeout`` naming ``what``).

        ``alone``: what to call instead (the db lock held; it makes its own transaction,
        or none) when nothing else is waiting.
        """
        request: _Request[T] = _Request(what, work, alone)
        with self._lock:
            self._waiting.append(request)
        db_lock = self._db.lock
        if not (db_lock.acquire(False) or db_lock.acquire(timeout=self._db.lock_wait)):
            with self._lock:
                if request in self._waiting:  # nobody took it: give up
                    self._waiting.remove(request)
                    raise LockTimeout(what, self._db.timeout, str(self._db.where.path))
            db_lock.acquire()  # taken by the lock's holder, who is writing it now
        try:
            if not request.done:
                with self._lock:
                    group, self._waiting = self._waiting, []
                self._commit(group)
        finally:
            db_lock.release()
        return request.outcome()

    def _commit(self, group: list[_Request[T]]) -> None:
        """Every request of ``group`` in one transaction (the caller holds the db lock)."""
        alone = group[0].alone
        if len(group) == 1 and alone is not None:
            request = group[0]
            try:
                request.result = alone()
            except BaseException as exc:
                request.error = exc
                if not isinstance(exc, Exception):
                    raise
            finally:
                request.done = True
            return
        db = self._db
        conn: sqlite3.Connection | None = None
        try:
            conn = db.begin_held(group[0].what)
            for request in group:
                before = conn.total_changes
                try:
                    request.result = request.work(conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    if conn.total_changes != before:
                        raise  # written in part: the group goes back
                    request.error = exc
            db.commit_held(conn, group[0].what)
        except BaseException as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in group:
                request.error = _for(request, exc, db)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like: this thread's, after the others know
        finally:
            for request in group:
                request.done = True


def _for(request: _Request[T], exc: BaseException, db: Database) -> BaseException:
    """The error a request of a failed group raises: a lock timeout names its own job."""
    if isinstance(exc, LockTimeout):
        return LockTimeout(request.what, exc.timeout, exc.lock_path)
    if isinstance(exc, sqlite3.OperationalError):
        return db.translated(exc, request.what)
    return exc
