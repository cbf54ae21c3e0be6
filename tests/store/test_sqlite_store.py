"""What only the sqlite:// backend has: its file, its transactions, its change log."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusbridge import BatchStatus, LockTimeout, StatusCache, StatusStore
from statusbridge.errors import UnusableDatabase
from statusbridge.store._shelf import open_shelf
from statusbridge.store.sqlite._database import _CREATE

from support.waiting import wait_until


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/deep/er/status.db"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "status.db"


@pytest.fixture
def store(url: str) -> Iterator[StatusStore]:
    with StatusStore(url) as s:
        yield s


def test_records_are_schema_1_documents_any_sqlite_client_reads(
    store: StatusStore, db: Path
) -> None:
    store.update("a", status="running", progress=0.5, meta={"step": "load"})
    assert db.is_file()  # the folders were made
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        doc, status = conn.execute(
            "SELECT doc, json_extract(doc, '$.status') FROM jobs WHERE id = 'a'"
        ).fetchone()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert status == "running"
    parsed = json.loads(doc)
    assert parsed["schema"] == 1 and parsed["meta"] == {"step": "load"} and parsed["seq"] == 1


def test_durable_means_synchronous_full(url: str) -> None:
    with StatusStore(url) as plain, StatusStore(url, durable=True) as durable:
        plain.update("a")
        durable.update("b")
        assert plain.connection().execute("PRAGMA synchronous").fetchone()[0] == 1  # type: ignore[attr-defined]
        assert durable.connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # type: ignore[attr-defined]


def test_a_busy_database_beyond_the_timeout_raises_lock_timeout(url: str, db: Path) -> None:
    with StatusStore(url, lock_timeout=0.3) as store:
        store.update("a")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            started = time.monotonic()
            with pytest.raises(LockTimeout, match="job 'a'") as info:
                store.update("a", progress=0.5)
            assert 0.25 < time.monotonic() - started < 5
            assert str(db) in info.value.lock_path
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.update("a", progress=0.5).seq == 2  # nothing half-written


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "status.db"
    bogus.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    url = f"sqlite:///{bogus}"
    with pytest.raises(UnusableDatabase, match=str(bogus)):
        StatusStore(url).read("a")
    with pytest.raises(UnusableDatabase, match=str(bogus)):
        StatusCache(url)
    assert bogus.read_bytes().startswith(b"this is not")  # left as it was


def test_the_change_log_keeps_the_last_log_keep_entries(url: str) -> None:
    with StatusStore(url, log_keep=5) as store:
        for i in range(20):
            store.update("a", progress=i / 20)
        store.delete("a")
        rows = store.connection().execute("SELECT pos FROM changes ORDER BY pos").fetchall()  # type: ignore[attr-defined]
    assert [r[0] for r in rows] == [17, 18, 19, 20, 21]


def test_a_change_log_made_autoincrement_is_followed_alike(url: str, db: Path) -> None:
    """Databases made before the log's pos became a plain rowid keep their AUTOINCREMENT."""
    db.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(
            _CREATE.replace("pos INTEGER PRIMARY KEY,", "pos INTEGER PRIMARY KEY AUTOINCREMENT,")
        )
    with StatusStore(url, log_keep=3) as store:
        for i in range(5):
            store.update("a", progress=i / 10)
        store.delete("a")  # trims at once
        with StatusCache(url) as cache:
            job = store.update("b", progress=0.5)
            wait_until(lambda: cache.get("b") == job, 10, "the write")
            assert "a" not in cache.snapshot()
            conn = store.connection()  # type: ignore[attr-defined]
            positions = [r[0] for r in conn.execute("SELECT pos FROM changes ORDER BY pos")]
            assert positions == list(range(positions[0], 8))  # (trimmed from 4 or later)
            made = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'")
            assert "AUTOINCREMENT" in made.fetchone()[0]
            assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096  # as it was made


def test_a_new_database_has_small_pages(store: StatusStore) -> None:
    """A commit writes whole pages to the -wal; a job's document is far smaller than 4 KiB."""
    store.update("a", message="x" * 5000)  # and a larger one spills over, as SQLite does
    conn = store.connection()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4096
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    job = store.read("a")
    assert job is not None and job.message == "x" * 5000


def test_another_programs_write_is_logged_and_followed(url: str, db: Path) -> None:
    with StatusStore(url) as store, StatusCache(url) as cache:
        job = store.update("a", progress=0.1)
        wait_until(lambda: cache.get("a") == job, 10, "the first write")
        doc = json.loads(json.dumps(json.loads(store.connection().execute(  # type: ignore[attr-defined]
            "SELECT doc FROM jobs").fetchone()[0])))  # fmt: skip
        doc["message"], doc["seq"] = "edited by hand", 2
        with (
            contextlib.closing(sqlite3.connect(db)) as conn,
            conn,
        ):  # not statusbridge: the trigger logs it
            conn.execute("UPDATE jobs SET doc = ? WHERE id = 'a'", (json.dumps(doc),))
        wait_until(lambda: (j := cache.get("a")) and j.message == "edited by hand", 10, "the edit")


def test_a_cache_behind_a_trimmed_log_reloads_and_says_so(url: str) -> None:
    with StatusStore(url, log_keep=3) as store, StatusCache(url) as cache:
        store.update("a")
        wait_until(lambda: "a" in cache.snapshot(), 10, "the first write")
        held, release = threading.Event(), threading.Event()

        def hold(snapshot: object, changed: frozenset[str]) -> None:
            if "b" in changed:
                held.set()
                release.wait(30)  # the cache thread stops here while the log moves on

        cache.subscribe(hold)
        store.update("b")
        assert held.wait(10)
        for i in range(10):
            store.update(f"c{i}", status=BatchStatus.COMPLETED)
        store.delete("a")  # a delete trims the log at once (updates: one in 64)
        release.set()
        wait_until(lambda: "c9" in cache.snapshot(), 10, "the writes past the trim")
        health = cache.health()
        assert "trimmed past position" in (health.backend_note or "")
        assert health.observer_restarts >= 1
        assert cache.snapshot() == store.scan()


def test_batch_definitions_live_in_the_same_database(url: str) -> None:
    shelf = open_shelf(url)
    try:
        shelf.put("b1", b'{"v": 1}', exclusive=True)
        with pytest.raises(FileExistsError):
            shelf.put("b1", b'{"v": 0}', exclusive=True)
        assert shelf.replace("b1", b'{"v": 1}', b'{"v": 2}') is True
        assert shelf.replace("b1", b'{"v": 1}', b'{"v": 3}') is False  # compare-and-swap
        assert shelf.get("b1") == b'{"v": 2}' and shelf.names() == ["b1"]
        shelf.remove("b1")
        assert shelf.get("b1") is None
    finally:
        shelf.close()


def test_dropped_stores_and_caches_release_threads_and_database_descriptors(
    url: str, db: Path
) -> None:
    """Descriptors on the database's files and threads come back; the inotify instance of a
    dropped observer is watchdog's to close (the folder cache's test counts those)."""

    def database_fds() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            count += target.startswith(str(db))
        return count

    StatusStore(url).update("a")
    StatusCache(url).close()  # warm up (imports, watchdog's module state)
    gc.collect()
    threads = threading.active_count()
    for _ in range(50):
        store = StatusStore(url)
        store.update("a", progress=0.5)
        cache = StatusCache(url)
        assert cache.get("a") is not None
        assert database_fds() > 0
        del store, cache  # never closed
    gc.collect()
    wait_until(lambda: database_fds() == 0 and threading.active_count() <= threads, 60,
               "database descriptors and threads released")  # fmt: skip


def test_a_database_replaced_under_a_cache_is_reloaded(url: str, db: Path, tmp_path: Path) -> None:
    """The SQLite form of 'a server restarted empty': another file now has the name."""
    other = f"sqlite:///{tmp_path}/other.db"
    with StatusStore(other) as store:
        store.update("new")
    with StatusStore(url) as store, StatusCache(url) as cache:
        store.update("old")
        wait_until(lambda: "old" in cache.snapshot(), 10, "the first write")
        store.close()
        os.replace(tmp_path / "other.db", db)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        wait_until(lambda: sorted(cache.snapshot()) == ["new"], 10, "the other file's jobs")
        assert "database file replaced" in (cache.health().backend_note or "")


def test_a_store_whose_database_was_deleted_writes_to_the_new_one(url: str, db: Path) -> None:
    """Never into the unlinked file another process can no longer see."""
    with StatusStore(url) as store:
        store.update("before")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        store.update("after")
        with StatusStore(url) as fresh:
            assert sorted(fresh.scan()) == ["after"]


def test_a_read_does_not_wait_for_a_write_in_progress(store: StatusStore) -> None:
    """Workers check their job before it starts while others write: a read takes a read
    connection of its own (WAL), never the writers' lock."""
    store.update("a", message="first")
    inside, release = threading.Event(), threading.Event()

    def slow_change(current: object) -> dict[str, str]:
        inside.set()
        assert release.wait(30)
        return {"message": "second"}

    writer = threading.Thread(target=store.modify, args=("a", slow_change))
    writer.start()
    try:
        assert inside.wait(30)
        read: list[object] = []
        reader = threading.Thread(target=lambda: read.append(store.read("a")))
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), "the read waited for the write"
        job = read[0]
        assert getattr(job, "message", None) == "first"  # the last committed record
    finally:
        release.set()
        writer.join(30)
    job = store.read("a")
    assert job is not None and job.message == "second"


def test_read_connections_are_closed_with_the_store(url: str) -> None:
    store = StatusStore(url)
    store.update("a")
    threads = [threading.Thread(target=store.read, args=("a",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    store.close()  # every read connection too: 3.13 warns about one left to the collector
    gc.collect()
    assert store.read("a") is not None  # reopened on use, as before
    store.close()


def test_a_load_reports_each_invalid_row_among_many_valid_ones(url: str, db: Path) -> None:
    """The load parses documents many at once; a bad one still costs only itself."""
    with StatusStore(url) as store:
        store.create_absent({f"j{i:04d}": {"progress": i / 2500} for i in range(2500)})
        good = store.scan()
    bad = {
        "j0003": "{not json",
        "j1200": '{"schema": 1, "schema": 1, "id": "j1200", "status": "pending"}',
        "j1201": json.dumps({"schema": 1, "id": "someone-else", "status": "pending"}),
        "j2499": b"\xff\xfe not utf-8",
    }
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for job_id, doc in bad.items():
            conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", (doc, job_id))
    expected = {job_id: job for job_id, job in good.items() if job_id not in bad}
    with StatusStore(url) as store:
        report = store.scan_report()
        assert report.jobs == expected
        assert set(report.invalid_records()) == {f"{job_id}.json" for job_id in bad}
    with StatusCache(url) as cache:
        assert dict(cache.snapshot()) == expected
        assert set(cache.health().invalid_files) == {f"{job_id}.json" for job_id in bad}


def test_a_load_leaves_the_garbage_collector_as_it_found_it(url: str) -> None:
    """The load pauses the collector for itself; the caller's choice stands after it."""
    with StatusStore(url) as store:
        store.update("a")
    assert gc.isenabled()
    with StatusCache(url) as cache:
        assert gc.isenabled()
        cache.rescan()
        assert gc.isenabled()
    gc.disable()
    try:
        with StatusCache(url):
            assert not gc.isenabled()
    finally:
        gc.enable()


# -- a store's write of a row it wrote last (no read first) -------------------------------------


def _statements(store: StatusStore) -> list[str]:
    """The statements the store's writers' connection runs from now on (SQLite's own trace).

    Every 64th write of a store reads first, to trim the change log, and a store starts
    at a random place in that count (stores apart trim at different times): the count is
    set where the next writes are not the trim's.
    """
    store._writes = 0  # type: ignore[attr-defined]
    ran: list[str] = []
    store.connection().set_trace_callback(ran.append)  # type: ignore[attr-defined]
    return ran


def _reads(ran: list[str]) -> list[str]:
    return [s for s in ran if s.startswith("SELECT doc FROM jobs")]


def test_a_second_update_of_ones_own_row_reads_nothing_first(url: str) -> None:
    with StatusStore(url) as store:
        store.update("a", status="running", meta={"x": 1})
        ran = _statements(store)
        job = store.update("a", progress=0.5, meta={"y": 2})
        assert _reads(ran) == []
        assert job.seq == 2 and dict(job.meta) == {"x": 1, "y": 2}
        assert store.read("a") == job


def test_another_connections_commit_between_two_updates_is_read_and_merged(url: str) -> None:
    with StatusStore(url) as mine, StatusStore(url) as other:
        mine.update("a", meta={"mine": 1})
        other.update("a", message="from the other", meta={"other": 1})
        ran = _statements(mine)
        job = mine.update("a", progress=0.5, meta={"mine": 2})
        assert len(_reads(ran)) == 1  # the remembered row was not the row: read it
        assert job.seq == 3 and job.message == "from the other"
        assert dict(job.meta) == {"mine": 2, "other": 1}
        assert mine.read("a") == job == other.read("a")
        ran.clear()
        assert mine.update("a", progress=0.75).seq == 4  # its own again: no read
        assert _reads(ran) == []


def test_a_hand_edit_between_two_updates_is_read_and_merged(url: str, db: Path) -> None:
    with StatusStore(url) as store:
        written = store.update("a", message="mine")
        doc = json.loads(store.connection().execute("SELECT doc FROM jobs").fetchone()[0])  # type: ignore[attr-defined]
        doc["message"] = "edited by hand"  # the same seq: only the text tells it apart
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
            conn.execute("UPDATE jobs SET doc = ? WHERE id = 'a'", (json.dumps(doc),))
        job = store.update("a", progress=0.5)
        assert job.message == "edited by hand" and job.seq == written.seq + 1
        assert store.read("a") == job


def test_a_row_deleted_by_another_store_is_made_again(url: str) -> None:
    with StatusStore(url) as mine, StatusStore(url) as other:
        mine.update("a", meta={"old": 1})
        mine.update("a", progress=0.5)
        assert other.delete("a")
        job = mine.update("a", progress=0.25)
        assert job.seq == 1 and dict(job.meta) == {}  # a new record, not the remembered one
        assert other.read("a") == job


def test_a_modify_that_declines_on_a_stale_record_decides_again_on_the_row(url: str) -> None:
    """'Only if PENDING', when this store last wrote RUNNING and another reset it since."""
    with StatusStore(url) as mine, StatusStore(url) as other:
        mine._writes = 0  # type: ignore[attr-defined]  # not the trim's turn (see _statements)
        mine.update("a", status="running")
        other.update("a", status="pending", started_at=None)
        seen: list[BatchStatus | None] = []

        def start_if_pending(current: object) -> dict[str, str] | None:
            status = getattr(current, "status", None)
            seen.append(status)
            return {"status": "running"} if status is BatchStatus.PENDING else None

        job = mine.modify("a", start_if_pending)
        assert seen == [BatchStatus.RUNNING, BatchStatus.PENDING]  # called again on the row
        assert job is not None and job.status is BatchStatus.RUNNING and job.seq == 3
        assert other.read("a") == job
        seen.clear()
        assert mine.modify("a", start_if_pending) is None  # still its own row: declined
        assert seen == [BatchStatus.RUNNING]


def test_updates_without_a_read_are_logged_for_caches(url: str) -> None:
    with StatusStore(url) as store, StatusCache(url) as cache:
        for i in range(1, 151):  # past a trim of the log, too
            job = store.update("a", progress=i / 150, meta={"i": i})
        wait_until(lambda: cache.get("a") == job, 10, "the last write")
        conn = store.connection()  # type: ignore[attr-defined]
        logged = conn.execute("SELECT count(*) FROM changes WHERE id = 'a'").fetchone()[0]
        assert logged == 150


@pytest.mark.slow
def test_another_process_writing_between_two_updates_is_read_and_merged(url: str) -> None:
    import multiprocessing as mp

    from support.backend_workers import write_steps

    with StatusStore(url) as store:
        store.update("a", meta={"mine": 1})
        proc = mp.get_context("spawn").Process(target=write_steps, args=(url, "a", 1))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        job = store.update("a", message="after")
        assert job.seq == 4 and job.status is BatchStatus.COMPLETED  # the other's two writes
        assert dict(job.meta) == {"mine": 1, "i": 1} and job.message == "after"
