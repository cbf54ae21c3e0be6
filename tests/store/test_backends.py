"""The contract every backend keeps: the same tests, run on a folder and on a real Redis server."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from statusbridge import (
    BatchJob,
    BatchStatus,
    InvalidRecordError,
    StatusCache,
    StatusStore,
    on_batch_finished,
    on_job_finished,
)
from statusbridge.metrics import register
from statusbridge.record._model import utc_now

from support.backend_workers import increment, write_steps
from support.platform import NATIVE_BACKEND
from support.redis_server import RedisServer
from support.waiting import wait_until

# ``location`` (one per backend) comes from tests/conftest.py.


@pytest.fixture
def store(location: str) -> Iterator[StatusStore]:
    with StatusStore(location) as s:
        yield s


@pytest.fixture
def cache(location: str, store: StatusStore) -> Iterator[StatusCache]:
    with StatusCache(location) as c:
        yield c


def expected_backend(location: str) -> str:
    if location.startswith(("redis", "sqlite")):
        return location.split(":", 1)[0]
    return NATIVE_BACKEND


def corrupt(store: StatusStore, job_id: str) -> None:
    """Put an invalid record for ``job_id`` where the backend keeps records."""
    if store.location.startswith("redis"):
        store.client.hset(store.keys.job(job_id), "status", '"exploded"')  # type: ignore[attr-defined]
        # Announce it on the feed like a writer would (a foreign program writing badly).
        store.client.xadd(store.keys.feed, {"id": job_id, "n": 0})  # type: ignore[attr-defined]
    elif store.location.startswith("sqlite"):
        with store.connection() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE jobs SET doc = ? WHERE id = ?", ('{"schema": 1', job_id))
    else:
        Path(store.location, f"{job_id}.json").write_text('{"schema": 1, "id": "' + job_id + '"')


# -- the write side ----------------------------------------------------------------------------


def test_update_merges_like_the_reference(store: StatusStore) -> None:
    first = store.update("j1", status="running", progress=0.25, meta={"a": 1}, params={"x": [1]})
    assert first.seq == 1 and first.started_at is not None and first.created_at is not None
    second = store.update("j1", meta={"b": 2}, progress=1 / 3)
    assert second.seq == 2
    assert dict(second.meta) == {"a": 1, "b": 2}
    assert second.progress == 1 / 3  # exactly: no precision lost on the way
    assert second.params == first.params and second.started_at == first.started_at
    done = store.update("j1", status=BatchStatus.COMPLETED, result={"ok": True})
    assert done.completed_at is not None and done.status is BatchStatus.COMPLETED
    assert store.read("j1") == done
    assert store.scan() == {"j1": done}
    assert store.read("missing") is None


def test_completed_clears_an_error_message_it_does_not_set(store: StatusStore) -> None:
    """A final COMPLETED over a judgement the job outlived ("worker died", made by a process
    whose clock was apart) must not keep that error beside it (issue 26 item 3)."""
    store.update("j", status="running")
    store.update("j", status="failed", error_message="worker died: no heartbeat for 60s")
    done = store.update("j", status="completed", result=1)
    assert done.error_message is None and store.read("j") == done
    failed = store.update("k", status="failed", error_message="boom")
    assert failed.error_message == "boom"  # only COMPLETED clears it
    kept = store.update("k", status="completed", error_message="kept on purpose")
    assert kept.error_message == "kept on purpose"


def test_modify_decides_under_the_contract(store: StatusStore) -> None:
    assert store.modify("j", lambda cur: None) is None
    assert store.read("j") is None
    made = store.modify("j", lambda cur: {"message": "new"} if cur is None else None)
    assert made is not None and made.message == "new"
    assert store.modify("j", lambda cur: {"message": "again"} if cur is None else None) is None


def test_modify_many_gives_each_write_its_own_outcome(store: StatusStore) -> None:
    """One write's bad result or bad id fails that write alone; the others land, in order."""
    store.update("kept", status=BatchStatus.COMPLETED)
    outcomes = store.modify_many(
        [
            ("a", lambda current: {"status": BatchStatus.RUNNING}),
            ("a", lambda current: {"progress": 0.5} if current else None),
            ("unstorable", lambda current: {"result": object()}),
            ("bad/id", lambda current: {}),
            ("kept", lambda current: None if current and current.is_finished else {}),
            ("b", lambda current: {"message": "lands"}),
        ]
    )
    first, second, unstorable, bad_id, kept, b = outcomes
    assert isinstance(first, BatchJob) and first.seq == 1
    assert isinstance(second, BatchJob) and second.seq == 2 and second.progress == 0.5
    assert isinstance(unstorable, TypeError) and isinstance(bad_id, ValueError)
    assert kept is None
    assert isinstance(b, BatchJob) and b.message == "lands"
    assert store.read("a") == second and store.read("b") == b
    assert store.read("unstorable") is None
    done = store.read("kept")
    assert done is not None and done.seq == 1


def test_create_absent_creates_only_the_jobs_without_a_record(
    store: StatusStore, cache: StatusCache
) -> None:
    store.update("b-1", status="running", message="started elsewhere")
    store.update("b-3", status="cancelled")
    records = {
        f"b-{i}": {"status": BatchStatus.PENDING, "batch_id": "b", "params": {"i": i}}
        for i in range(6)
    }
    created = store.create_absent(records)
    assert [job.id for job in created] == ["b-0", "b-2", "b-4", "b-5"]
    assert all(job.seq == 1 and job.status is BatchStatus.PENDING for job in created)
    assert created[0].params == {"i": 0} and created[0].batch_id == "b"
    # Those with a record are left as they were.
    running = store.read("b-1")
    assert running is not None and running.message == "started elsewhere" and running.seq == 1
    assert store.read("b-3").status is BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert store.read("b-5") == created[-1]
    # A cache sees them like any write; a second call creates nothing.
    wait_until(lambda: len(cache.snapshot()) == 6, 30, "the created records")
    assert store.create_absent(records) == []
    assert store.create_absent({}) == []


def test_create_absent_checks_every_record_before_writing_any(store: StatusStore) -> None:
    good = {"status": BatchStatus.PENDING}
    with pytest.raises(ValueError, match="progress"):
        store.create_absent({"ok-1": good, "bad": {"progress": 2.0}, "ok-2": good})
    with pytest.raises(TypeError, match="unknown field"):
        store.create_absent({"ok-1": good, "bad": {"colour": "red"}})
    with pytest.raises(ValueError, match="job id"):
        store.create_absent({"ok-1": good, "../x": good})
    assert store.scan() == {}


def test_unsafe_ids_and_unknown_fields_are_refused_before_writing(store: StatusStore) -> None:
    for bad in ("../x", "a/b", "", "a\0b", ".hidden", "x" * 200):
        with pytest.raises(ValueError, match="job id"):
            store.update(bad, progress=0.1)
        with pytest.raises(ValueError, match="job id"):
            store.read(bad)
    with pytest.raises(TypeError, match="unknown field"):
        store.update("ok", colour="red")
    with pytest.raises(ValueError, match="progress"):
        store.update("ok", progress=2.0)
    assert store.scan() == {}


def test_delete_and_cleanup(store: StatusStore) -> None:
    old = utc_now() - timedelta(hours=48)
    store.update("old", status="completed", completed_at=old)
    store.update("new", status="completed")
    store.update("busy", status="running")
    assert store.cleanup(max_age_hours=24, dry_run=True) == 1
    assert store.cleanup(max_age_hours=24) == 1
    assert sorted(store.scan()) == ["busy", "new"]
    assert store.delete("new") is True
    assert store.delete("new") is False
    assert sorted(store.scan()) == ["busy"]


def test_cleanup_keeps_the_finished_jobs_of_a_batch_still_running(store: StatusStore) -> None:
    """Removing them would drop the batch's counts mid-run (and, once every job of it has
    finished, leave a ``BatchManager`` that never saw the end counting them as pending)."""
    old = utc_now() - timedelta(hours=48)
    store.update("a-0", status="completed", batch_id="a", completed_at=old)
    store.update("a-1", status="running", batch_id="a")
    store.update("b-0", status="completed", batch_id="b", completed_at=old)
    store.update("b-1", status="failed", batch_id="b", completed_at=old)
    store.update("loose", status="completed", completed_at=old)
    assert sorted(store.cleanup_ids(24, dry_run=True)) == ["b-0", "b-1", "loose"]
    assert store.cleanup(max_age_hours=None, max_completed=0) == 3
    assert sorted(store.scan()) == ["a-0", "a-1"]
    store.update("a-1", status="completed", completed_at=old)
    assert sorted(store.cleanup_ids(24)) == ["a-0", "a-1"]
    assert store.scan() == {}


def test_delete_if_unchanged_keeps_a_record_changed_since_read(store: StatusStore) -> None:
    """Retention's removal: a record rewritten after it was read (a restart) survives."""
    seen = store.update("restarted", status="completed")
    kept = store.update("kept", status="completed")
    store.update("restarted", status="pending", completed_at=None)  # a new run meanwhile
    assert store.delete_if_unchanged([seen, kept]) == ["kept"]
    current = store.read("restarted")
    assert current is not None and current.status is BatchStatus.PENDING
    assert store.read("kept") is None
    # Versions a backend cannot use are ignored: the record itself decides.
    assert store.delete_if_unchanged([seen], versions={"restarted": b"stale"}) == []
    assert store.delete_if_unchanged([current], versions={}) == ["restarted"]
    assert store.scan() == {}


@pytest.mark.slow
def test_no_lost_update_between_processes(location: str, tmp_path: Path) -> None:
    """6 processes x 50 conditional increments of one counter: every one counts."""
    go = tmp_path / "go"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=increment, args=(location, "counter", 50, str(go))) for _ in range(6)
    ]
    for p in procs:
        p.start()
    go.touch()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    job = StatusStore(location).read("counter")
    assert job is not None
    assert job.meta["n"] == 300
    assert job.seq == 300


# -- the read side -----------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_follows_another_process(location: str, cache: StatusCache) -> None:
    assert cache.health().backend == expected_backend(location)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=write_steps, args=(location, "remote", 20))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    job = wait_until(
        lambda: (j := cache.get("remote")) is not None and j.is_finished and j, 10, "the last write"
    )
    assert job.progress == 1.0 and job.meta["i"] == 20
    assert cache.snapshot().summary().counts[BatchStatus.COMPLETED] == 1


def test_wait_for_change_subscribe_and_gone_jobs(store: StatusStore, cache: StatusCache) -> None:
    seen: list[tuple[int, frozenset[str], int | None]] = []
    unsubscribe = cache.subscribe(
        lambda snap, ids: seen.append((snap.version, ids, threading.get_ident()))
    )
    version = cache.version
    store.update("a", progress=0.5)
    snap = cache.wait_for_change(version, timeout=10)
    assert snap.version > version and snap["a"].progress == 0.5
    wait_until(lambda: any("a" in ids for _, ids, _ in seen), 10, "the subscriber")
    assert {thread for *_, thread in seen} == {cache._thread.ident}
    versions = [v for v, _, _ in seen]
    assert versions == sorted(versions)
    store.delete("a")
    wait_until(lambda: "a" not in cache.snapshot(), 10, "the deleted job to leave")
    unsubscribe()
    stale = cache.wait_for_change(cache.version, timeout=0.05)
    assert stale.version == cache.version  # a timeout returns the current snapshot


def test_seq_never_goes_backwards(store: StatusStore, cache: StatusCache) -> None:
    last: dict[str, int] = {}
    backwards: list[str] = []

    def check(snap: object, ids: frozenset[str]) -> None:
        for job_id in ids:
            job = cache.get(job_id)
            if job is None:
                continue
            if job.seq < last.get(job_id, 0):
                backwards.append(job_id)
            last[job_id] = job.seq

    cache.subscribe(check)
    for i in range(100):
        store.update(f"j{i % 3}", progress=i / 100)
    wait_until(lambda: all((j := cache.get(f"j{k}")) and j.progress == p
               for k, p in ((0, 0.99), (1, 0.97), (2, 0.98))), 10, "the last writes")  # fmt: skip
    assert backwards == []
    assert cache.rescan() == store.scan()


def test_invalid_record_is_reported_and_the_last_good_one_kept(
    store: StatusStore, cache: StatusCache
) -> None:
    good = store.update("j", progress=0.3)
    wait_until(lambda: cache.get("j") == good, 10, "the good record")
    corrupt(store, "j")
    wait_until(lambda: "j.json" in cache.health().invalid_files, 10, "the invalid record")
    assert cache.get("j") == good
    with pytest.raises(InvalidRecordError):
        store.read("j")
    with pytest.raises(InvalidRecordError, match="refusing to overwrite"):
        store.update("j", progress=0.4)
    assert "j" not in store.scan()
    assert "j.json" in store.scan_report().invalid_records()


def test_finished_hooks_fire_once_across_a_rescan(store: StatusStore, cache: StatusCache) -> None:
    store.update("old", status="completed")  # history: not reported without replay
    wait_until(lambda: "old" in cache.snapshot(), 10, "the old record")
    jobs: list[str] = []
    batches: list[str | None] = []
    stop_jobs = on_job_finished(cache, lambda job: jobs.append(job.id))
    stop_batches = on_batch_finished(cache, lambda summary, _jobs: batches.append(summary.id))
    for job_id in ("a", "b"):
        store.update(job_id, status="running", batch_id="B")
    # Both running in the cache first: a cache that first read "a" already completed,
    # before it knew "b", would see B finish twice, as the hook's contract says.
    wait_until(
        lambda: all((j := cache.get(i)) and j.status == "running" for i in ("a", "b")),
        10,
        "both jobs running",
    )
    store.update("a", status="completed")
    store.update("b", status="failed", error_message="boom")
    wait_until(lambda: batches == ["B"], 10, "the batch hook")
    cache.rescan()
    store.update("c", status="cancelled")
    wait_until(lambda: "c" in jobs, 10, "the job hook for c")
    assert sorted(jobs) == ["a", "b", "c"] and batches == ["B"]
    stop_jobs()
    stop_batches()


def test_metrics_read_the_backend(store: StatusStore, cache: StatusCache) -> None:
    registry = CollectorRegistry()
    collector = register(cache, registry)
    store.update("r", status="running")
    store.update("f", status="running")
    store.update("f", status="failed", error_message="boom")
    wait_until(lambda: (j := cache.get("f")) is not None and j.is_finished, 10, "the failure")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    wait_until(
        lambda: value("statusbridge_job_transitions_total", status="failed") == 1, 10, "a count"
    )
    assert value("statusbridge_jobs", status="running") == 1
    assert value("statusbridge_jobs", status="failed") == 1
    assert value("statusbridge_jobs", status="pending") == 0
    assert value("statusbridge_cache_invalid_records") == 0
    collector.close()


def test_two_caches_and_close_twice(location: str, store: StatusStore) -> None:
    store.update("x")
    with StatusCache(location) as one, StatusCache(location) as two:
        assert one.snapshot() == two.snapshot() == store.scan()
    one.close()
    assert not one.health().running
    assert "x" in one.snapshot()  # the last snapshot stays readable


@pytest.mark.slow
def test_redis_server_helper_is_stopped_by_pid() -> None:
    server = RedisServer().start()
    process = server.process
    assert process is not None and process.poll() is None
    server.stop()
    assert process.poll() is not None
    assert not server.workdir.exists()  # nothing left in the temp folder


def test_close_never_waits_for_a_subscriber(store: StatusStore, cache: StatusCache) -> None:
    """A subscriber that takes the application's lock, and a close() under that lock.

    The folder cache called subscribers holding its apply lock, and close() waited
    for the cache thread and then for that lock: a deadlock for as long as the
    subscriber waited (the Redis cache stalled close() for its 10 s join). Now
    close() does not wait for a thread that is calling subscribers; that thread
    ends by itself when they return. The subscriber's acquire has a timeout only
    so that a regression fails instead of hanging the suite.
    """
    app_lock = threading.Lock()
    entered = threading.Event()
    got: list[bool] = []
    cache_threads: list[threading.Thread] = []

    def subscriber(snapshot: object, changed: frozenset[str]) -> None:
        if "a" not in changed:
            return
        cache_threads.append(threading.current_thread())
        entered.set()
        ok = app_lock.acquire(timeout=30)
        got.append(ok)
        if ok:
            app_lock.release()

    cache.subscribe(subscriber)
    closed = threading.Event()

    def tear_down() -> None:
        with app_lock:  # e.g. the application's shutdown, under its own lock
            store.update("a", status="running")
            wait_until(entered.is_set)
            cache.close()
        closed.set()

    worker = threading.Thread(target=tear_down, daemon=True)
    worker.start()
    wait_until(lambda: got, timeout=60)
    worker.join(timeout=60)
    assert got == [True]
    assert closed.is_set()
    wait_until(lambda: not cache_threads[0].is_alive(), message="the cache thread ended")


def test_progress_none_is_stored_as_unknown(store: StatusStore) -> None:
    store.update("j", status="running", progress=0.4)
    job = store.update("j", progress=None)
    assert job.reported_progress is None and job.progress_known is False
    stored = store.read("j")
    assert stored == job and stored is not None and stored.reported_progress is None
