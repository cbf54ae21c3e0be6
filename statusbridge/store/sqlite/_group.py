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

import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from statusbridge.errors import LockTimeout

if TYPE_CHECKING:
    from statusbridge.store.sqlite._database import Database

__all__ = ["GroupCommit"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class _Request(Generic[T]):
    what: str  # names the job in errors (``LockTimeout``)
    work: Callable[[sqlite3.Connection], T]
    alone: Callable[[], T] | None
    done: bool = False
    ran: bool = False  # ``result`` is set (None may be a result)
    result: T | None = None
    error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        if not self.ran:
            raise RuntimeError(f"{self.what}: the write was not carried out")
        return self.result  # type: ignore[return-value]  # (None is a T of work's)


class GroupCommit(Generic[T]):
    """Runs ``work(conn)`` inside a write transaction shared with what else is waiting."""

    def __init__(self, db: Database) -> None:
        # Weakly: the database owns this, and a store dropped without close() must free
        # its database (and close its files) at once, not at the next garbage collection.
        self._db_ref = weakref.ref(db)
        self._lock = threading.Lock()  # guards _waiting; never held around the db lock
        self._waiting: list[_Request[T]] = []
        # Threads whose wait for the db lock timed out after a holder took their request:
        # they wait for it to be done (not for the lock, which others may take next).
        self._done = threading.Condition(self._lock)
        self._stragglers = 0

    @property
    def _db(self) -> Database:
        db = self._db_ref()
        if db is None:
            raise RuntimeError("the store's database was let go")  # (its store holds it)
        return db

    def forget(self) -> None:
        """In a forked child: the parent's waiting threads are not here."""
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._waiting = []
        self._stragglers = 0

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
        self._carry([request])
        return request.outcome()

    def run_many(
        self, items: Sequence[tuple[str, Callable[[sqlite3.Connection], T]]]
    ) -> list[T | Exception]:
        """Each ``work(conn)``'s result, or the exception it (or its transaction) raised:
        all of them, with whatever else waits, in one transaction."""
        requests: list[_Request[T]] = [_Request(what, work, None) for what, work in items]
        self._carry(requests)
        outcomes: list[T | Exception] = []
        for request in requests:
            try:
                outcomes.append(request.outcome())
            except Exception as exc:  # noqa: BLE001 - each caller's own outcome
                outcomes.append(exc)
        return outcomes

    def _carry(self, requests: list[_Request[T]]) -> None:
        """Queue ``requests`` and see them carried out: by this thread, which takes the db
        lock and writes all that waits, or by another that held the lock meanwhile. One
        that nobody carried out in time gets its ``LockTimeout``."""
        with self._lock:
            self._waiting.extend(requests)
        db = self._db
        db_lock = db.lock
        try:
            locked = db_lock.acquire(False) or db_lock.acquire(timeout=db.lock_wait)
        except BaseException:
            self._withdraw(requests)  # interrupted while waiting: not written later either
            raise
        if not locked:
            self._withdraw(requests)
            for request in requests:
                if not request.done:
                    request.error = LockTimeout(request.what, db.timeout, str(db.where.path))
            return
        try:
            if not all(request.done for request in requests):
                self._commit()
        except BaseException:
            mine = {id(request) for request in requests}
            with self._lock:  # interrupted: its own writes are not carried out later
                self._waiting = [r for r in self._waiting if id(r) not in mine]
            raise
        finally:
            db_lock.release()

    def _withdraw(self, requests: list[_Request[T]]) -> None:
        """Take back the requests nobody took; wait until the holder of the others is done."""
        mine = {id(request) for request in requests}
        with self._lock:
            waiting = {id(request) for request in self._waiting}
            taken = [request for request in requests if id(request) not in waiting]
            self._waiting = [r for r in self._waiting if id(r) not in mine]
            if not taken:
                return
            self._stragglers += 1
            try:
                self._done.wait_for(lambda: all(request.done for request in taken))
            finally:
                self._stragglers -= 1

    def _commit(self) -> None:
        """Every request waiting now, in one transaction (the caller holds the db lock)."""
        with self._lock:
            group, self._waiting = self._waiting, []
        try:
            self._write(group)
        finally:
            with self._lock:
                for request in group:
                    request.done = request.done or request.ran or request.error is not None
                # Not carried out (the holder was interrupted): back in line, first.
                self._waiting[:0] = [r for r in group if not r.done]
                if self._stragglers:
                    self._done.notify_all()

    def _write(self, group: list[_Request[T]]) -> None:
        alone = group[0].alone
        if len(group) == 1 and alone is not None:
            request = group[0]
            try:
                request.result = alone()
                request.ran = True
            except Exception as exc:  # noqa: BLE001 - raised in the caller's thread
                request.error = exc
            return
        db = self._db
        conn: sqlite3.Connection | None = None
        try:
            conn = db.begin_held(group[0].what)
            for request in group:
                before = conn.total_changes
                try:
                    request.result = request.work(conn)
                    request.ran = True
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    if conn.total_changes != before:
                        raise  # written in part: the group goes back
                    request.error = exc
            db.commit_held(conn, group[0].what)
        except Exception as exc:  # noqa: BLE001 - raised in each caller's thread
            for request in group:
                request.ran = False
                request.error = _for(request, exc, db)  # before anything else can fail
            _roll_back(conn)
        except BaseException:
            for request in group:
                request.ran = False
                request.error = None  # not carried out: another holder runs them again
            _roll_back(conn)
            raise


def _roll_back(conn: sqlite3.Connection | None) -> None:
    if conn is not None and conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.warning("statusbridge: a failed group's ROLLBACK failed too", exc_info=True)


def _for(request: _Request[T], exc: Exception, db: Database) -> Exception:
    """The error a request of a failed group raises: its own instance, naming its job."""
    if isinstance(exc, LockTimeout):
        return LockTimeout(request.what, exc.timeout, exc.lock_path)
    if isinstance(exc, sqlite3.OperationalError):
        translated = db.translated(exc, request.what)
        if translated is not exc:
            return translated
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type that cannot be made again
        return exc
    copy.__cause__ = exc
    return copy
