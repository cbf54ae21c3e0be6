"""Group commit on ``sqlite://``: writes that wait behind one transaction share the next.

Writes are made to wait for real: another connection holds SQLite's write lock
(``BEGIN IMMEDIATE``) while this store's threads write, so the first of them waits
in SQLite and the others queue behind it in the store.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchJob, LockTimeout, StatusStore

from support.waiting import wait_until


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "status.db"


@contextmanager
def database_held(db: Path) -> Iterator[Callable[[], None]]:
    """Another connection holds the database's write lock; call the result to let go."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            other.execute("ROLLBACK")
            released = True

    try:
        yield release
    finally:
        release()
        other.close()


class Writer(threading.Thread):
    """One write on its own thread; keeps what it returned or raised."""

    def __init__(self, write: Callable[[], BatchJob | None]) -> None:
        super().__init__(daemon=True)
        self.write = write
        self.result: BatchJob | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.write()
        except BaseException as exc:  # the test looks at it
            self.error = exc


def _waiting(store: StatusStore) -> int:
    """Writes queued behind the one that holds the store's lock (the group's queue)."""
    return len(store._db.grouped._waiting)  # type: ignore[attr-defined]


def _commits(store: StatusStore) -> list[str]:
    ran: list[str] = []
    store.connection().set_trace_callback(ran.append)  # type: ignore[attr-defined]
    return ran


def _queue_writes(
    store: StatusStore, db: Path, writes: list[Callable[[], BatchJob | None]]
) -> list[Writer]:
    """Start ``writes[0]`` (it waits in SQLite), queue the rest behind it, then let go."""
    with database_held(db) as release:
        first = Writer(writes[0])
        first.start()
        held: threading.Lock = store._db.lock  # type: ignore[attr-defined]
        wait_until(
            lambda: held.locked() and _waiting(store) == 0, 10, "the first write alone, holding"
        )
        rest = []
        for write in writes[1:]:
            rest.append(writer := Writer(write))
            writer.start()
        wait_until(lambda: _waiting(store) == len(rest), 10, "the other writes queued")
        release()
        writers = [first, *rest]
        for writer in writers:
            writer.join(30)
            assert not writer.is_alive()
    return writers


def test_writes_queued_behind_a_transaction_share_the_next_one(db: Path) -> None:
    with StatusStore(f"sqlite:///{db}", lock_timeout=30) as store:
        store.update("shared", message="before")
        ran = _commits(store)
        writers = _queue_writes(
            store,
            db,
            [
                lambda: store.update("first", progress=0.1),
                lambda: store.update("a", status="running"),
                lambda: store.update("b", status="completed", result=2),
                lambda: store.update("shared", progress=0.5),
                lambda: store.update("shared", meta={"second": True}),
            ],
        )
        assert [w.error for w in writers] == [None] * 5
        assert ran.count("COMMIT") == 2  # the first alone, then the four queued behind it
        for writer in writers:
            assert writer.result is not None
            assert store.read(writer.result.id) == writer.result or writer.result.id == "shared"
        shared = store.read("shared")
        assert shared is not None and shared.seq == 3  # both writes of one job, in order
        assert shared.progress == 0.5 and dict(shared.meta) == {"second": True}
        assert {w.result.seq for w in writers[3:] if w.result} == {2, 3}


def test_a_write_that_raises_fails_alone_and_the_rest_of_its_group_lands(db: Path) -> None:
    def refuse(current: BatchJob | None) -> dict[str, Any]:
        raise ValueError("refused by the caller's change")

    with StatusStore(f"sqlite:///{db}", lock_timeout=30) as store:
        store.update("made")  # the database exists
        writers = _queue_writes(
            store,
            db,
            [
                lambda: store.update("first"),
                lambda: store.update("a", message="lands"),
                lambda: store.modify("refused", refuse),
                lambda: store.update("too-big", message="x" * (store.max_bytes + 1)),
                lambda: store.update("b", message="lands too"),
            ],
        )
        assert isinstance(writers[2].error, ValueError)
        assert isinstance(writers[3].error, ValueError) and "nothing was written" in str(
            writers[3].error
        )
        assert [w.error for w in (writers[0], writers[1], writers[4])] == [None] * 3
        assert store.read("refused") is None and store.read("too-big") is None
        a, b = store.read("a"), store.read("b")
        assert a is not None and a.message == "lands" and b is not None


def test_a_group_that_cannot_commit_fails_every_write_naming_its_own_job(db: Path) -> None:
    """Three writes queue while this thread holds the store's lock; one of them then
    leads the group into a database another connection holds beyond the timeout."""
    with StatusStore(f"sqlite:///{db}", lock_timeout=1.0) as store:
        store.update("x")
        held: threading.Lock = store._db.lock  # type: ignore[attr-defined]
        with database_held(db):  # never let go while they try
            with held:
                writers = [
                    Writer(partial(store.update, f"job-{i}", progress=0.5)) for i in range(3)
                ]
                for writer in writers:
                    writer.start()
                wait_until(lambda: _waiting(store) == 3, 10, "the writes queued")
            for writer in writers:
                writer.join(60)
                assert not writer.is_alive()
        for i, writer in enumerate(writers):
            assert isinstance(writer.error, LockTimeout)
            assert f"job-{i}'" in str(writer.error)
        assert [store.read(f"job-{i}") for i in range(3)] == [None] * 3
        assert _waiting(store) == 0  # nothing left behind in the queue
        assert store.update("job-0").seq == 1  # and the store writes again


def test_many_threads_writing_the_same_jobs_lose_no_write(db: Path) -> None:
    url = f"sqlite:///{db}"
    jobs, threads, per_thread = 10, 8, 60
    with StatusStore(url) as store:

        def count_one(current: BatchJob | None) -> dict[str, Any]:
            return {"meta": {"count": (current.meta["count"] if current else 0) + 1}}

        def work(n: int) -> None:
            for i in range(per_thread):
                store.modify(f"job-{(n + i) % jobs}", count_one)

        writers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(120)
            assert not writer.is_alive()
        records = [store.read(f"job-{j}") for j in range(jobs)]
        assert sum(r.meta["count"] for r in records if r) == threads * per_thread
        assert all(r is not None and r.seq == r.meta["count"] for r in records)
    with closing(sqlite3.connect(db)) as conn:  # every write logged for the caches
        logged = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
    assert logged == threads * per_thread


def test_modify_many_writes_in_one_transaction(db: Path) -> None:
    with StatusStore(f"sqlite:///{db}", lock_timeout=30) as store:
        store.update("known", message="before")
        ran = _commits(store)
        outcomes = store.modify_many(
            [(f"job-{i}", lambda current: {"status": "completed"}) for i in range(50)]
            + [("known", lambda current: {"message": "after"})]
        )
        assert all(isinstance(o, BatchJob) for o in outcomes)
        assert ran.count("COMMIT") == 1
        assert len(store.scan()) == 51
        known = store.read("known")
        assert known is not None and known.message == "after" and known.seq == 2


def test_modify_many_that_cannot_get_the_database_fails_each_write(db: Path) -> None:
    with StatusStore(f"sqlite:///{db}", lock_timeout=0.5) as store:
        store.update("x")
        with database_held(db):
            outcomes = store.modify_many(
                [(f"job-{i}", lambda current: {"progress": 0.5}) for i in range(3)]
            )
        for i, outcome in enumerate(outcomes):
            assert isinstance(outcome, LockTimeout) and f"job-{i}'" in str(outcome)
        assert [store.read(f"job-{i}") for i in range(3)] == [None] * 3
        assert _waiting(store) == 0
        assert store.modify_many([("job-0", lambda current: {})])[0] is not None
