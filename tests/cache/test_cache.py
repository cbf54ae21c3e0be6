"""Layer 3: StatusCache keeps an immutable snapshot current, survives bad input and lost events."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from statusbridge import BatchJob, BatchStatus, Snapshot, StatusCache, StatusStore
from statusbridge.cache.folder._cache import FolderCache
from statusbridge.store.folder._store import FolderStore

from support.platform import NATIVE_BACKEND
from support.resources import no_more_than, process_resources
from support.waiting import wait_until


def job_in(cache: StatusCache, job_id: str, **expected: object):  # type: ignore[no-untyped-def]
    """Condition: the cache holds ``job_id`` with these field values."""

    def check() -> BatchJob | None:
        job = cache.get(job_id)
        if job is None or any(getattr(job, k) != v for k, v in expected.items()):
            return None
        return job

    return check


class TestBasics:
    def test_initial_scan(self, store: FolderStore) -> None:
        store.update("a", status="running", batch_id="b1")
        store.update("b", status="completed", batch_id="b1")
        with StatusCache(store.directory) as cache:
            snap = cache.snapshot()
            assert set(snap) == {"a", "b"}
            assert snap.version == 1
            assert [j.id for j in snap.batch("b1")] == ["a", "b"]
            assert cache.health().backend == NATIVE_BACKEND  # live events, not polling

    def test_sees_writes_deletes_and_wait_for_change(
        self, store: FolderStore, cache: StatusCache
    ) -> None:
        v0 = cache.version
        store.update("a", progress=0.25)
        snap = cache.wait_for_change(v0, timeout=10)
        assert snap.version > v0
        assert snap["a"].progress == 0.25
        store.update("a", progress=0.5)
        wait_until(job_in(cache, "a", progress=0.5), message="progress 0.5")
        store.delete("a")
        wait_until(lambda: "a" not in cache.snapshot(), message="delete seen")

    def test_wait_for_change_times_out_with_current_snapshot(self, cache: StatusCache) -> None:
        snap = cache.wait_for_change(cache.version, timeout=0.05)
        assert snap is cache.snapshot()

    def test_snapshots_are_immutable_and_isolated(
        self, store: FolderStore, cache: StatusCache
    ) -> None:
        store.update("a", progress=0.1)
        old = wait_until(lambda: cache.snapshot() if "a" in cache.snapshot() else None)
        store.update("a", progress=0.9)
        wait_until(job_in(cache, "a", progress=0.9))
        assert old["a"].progress == 0.1  # a held snapshot never changes
        with pytest.raises(TypeError):
            old["b"] = old["a"]  # type: ignore[index]

    def test_summary_and_batches(self, store: FolderStore, cache: StatusCache) -> None:
        store.update("a", batch_id="b1", status="completed")
        store.update("b", batch_id="b1", status="running", progress=0.5)
        store.update("c", batch_id="b2", status="pending")
        store.update("d")
        wait_until(lambda: len(cache.snapshot()) == 4)
        snap = cache.snapshot()
        s1 = snap.summary("b1")
        assert (s1.total, s1.progress, s1.state) == (2, 0.75, "running")
        assert s1.counts[BatchStatus.COMPLETED] == 1
        assert snap.summary().total == 4
        assert snap.batch_ids() == ("b1", "b2")
        assert snap.batch("nope") == ()
        store.update("b", batch_id="b2")  # moving a job between batches
        wait_until(job_in(cache, "b", batch_id="b2"))
        assert [j.id for j in cache.snapshot().batch("b1")] == ["a"]
        assert {j.id for j in cache.snapshot().batch("b2")} == {"b", "c"}

    def test_versions_strictly_increase_and_bursts_coalesce(
        self, store: FolderStore, cache: StatusCache
    ) -> None:
        seen: list[tuple[int, frozenset[str]]] = []
        cache.subscribe(lambda snap, changed: seen.append((snap.version, changed)))
        for i in range(300):
            store.update(f"j{i % 30}", progress=i / 300)
        wait_until(
            lambda: all((j := cache.get(f"j{k}")) is not None and j.seq == 10 for k in range(30)),
            message="all 300 writes",
        )
        versions = [v for v, _ in seen]
        assert versions == sorted(set(versions))  # strictly increasing
        assert len(versions) <= 300
        assert set().union(*(c for _, c in seen)) == {f"j{k}" for k in range(30)}

    def test_subscriber_errors_do_not_stop_the_cache(
        self, store: FolderStore, cache: StatusCache, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[frozenset[str]] = []

        def bad(snap: Snapshot, changed: frozenset[str]) -> None:
            raise RuntimeError("subscriber bug")

        cache.subscribe(bad)
        unsubscribe = cache.subscribe(lambda snap, changed: calls.append(changed))
        with caplog.at_level(logging.ERROR, logger="statusbridge"):
            store.update("a")
            wait_until(lambda: calls, message="second subscriber called")
        assert "subscriber bug" in caplog.text
        unsubscribe()
        store.update("b")
        wait_until(lambda: "b" in cache.snapshot())
        assert frozenset({"b"}) not in calls
        assert cache.health().running

    def test_close_stops_threads_and_keeps_last_snapshot(self, store: FolderStore) -> None:
        store.update("a")
        cache = StatusCache(store.directory)
        cache.close()
        assert not cache.health().running
        assert cache.get("a") is not None
        assert cache.wait_for_change(cache.version, timeout=5).version == cache.version

    def test_dropped_caches_release_threads_descriptors_and_watches(
        self, store: FolderStore
    ) -> None:
        store.update("a")
        with StatusCache(store.directory) as warm:  # watchdog's one-off module state
            warm.close()  # close() twice is fine
        gc.collect()
        before = process_resources()
        for _ in range(200):
            cache = StatusCache(store.directory)
            assert cache.get("a") is not None
            del cache  # never closed
        gc.collect()
        wait_until(no_more_than(before), 60, f"threads, fds, watches back at {before}")

    def test_rescan_runs_subscribers_on_the_cache_thread(self, store: FolderStore) -> None:
        # Polling that never polls: only rescan() sees the change.
        with StatusCache(store.directory, polling=True, poll_interval=3600) as cache:
            threads: list[int] = []
            cache.subscribe(lambda snap, changed: threads.append(threading.get_ident()))
            store.update("a", progress=0.5)
            snap = cache.rescan()
            assert snap["a"].progress == 0.5  # the caller waited for the result
            assert threads == [cache._thread.ident]
            assert threading.get_ident() not in threads

    def test_polling_backend(self, store: FolderStore) -> None:
        with StatusCache(store.directory, polling=True, poll_interval=0.1) as cache:
            assert cache.health().backend == "polling"
            store.update("p", progress=0.3)
            wait_until(job_in(cache, "p", progress=0.3), message="polled change")

    def test_missing_folder_is_created(self, tmp_path: Path) -> None:
        with StatusCache(tmp_path / "new" / "status") as cache:
            assert (tmp_path / "new" / "status").is_dir()
            assert cache.health().directory_present


class TestBadFiles:
    """Invariant 5: bad input is skipped and reported; the last good record stays."""

    def invalid(self, cache: StatusCache, name: str) -> str | None:
        return cache.health().invalid_files.get(name)

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe\x00", "not valid UTF-8"),
            (b'{"schema": 9, "id": "a", "status": "pending"}', "schema version 9 is newer"),
            (b'{"schema": 1, "id": "zz", "status": "pending"}', "does not match the file name"),
            (b"", "empty file"),
        ],
    )
    def test_invalid_content_keeps_last_good(
        self, store: FolderStore, cache: StatusCache, content: bytes, reason: str
    ) -> None:
        store.update("a", progress=0.4)
        wait_until(job_in(cache, "a", progress=0.4))
        # write_bytes truncates first: the cache may see "empty file" on the way.
        (store.directory / "a.json").write_bytes(content)
        wait_until(lambda: reason in (self.invalid(cache, "a.json") or ""), message=reason)
        assert cache.get("a") is not None and cache.get("a").progress == 0.4  # type: ignore[union-attr]
        (store.directory / "a.json").unlink()
        store.update("a", progress=0.6)  # fixed: the report goes away
        wait_until(job_in(cache, "a", progress=0.6))
        assert self.invalid(cache, "a.json") is None

    def test_odd_files_are_reported_not_followed(
        self, store: FolderStore, cache: StatusCache, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside.json"
        store.update("target")
        outside.write_bytes((store.directory / "target.json").read_bytes())
        os.symlink(outside, store.directory / "link.json")
        (store.directory / "dir.json").mkdir()
        (store.directory / "notes.txt").write_text("hello")
        (store.directory / "bad name.json").write_text("{}")
        os.mkfifo(store.directory / "fifo.json")
        big = StatusStore(store.directory, max_bytes=10_000_000)
        big.update("huge", message="x" * 2_000_000)
        expected = {
            "link.json": "symbolic link",
            "dir.json": "directory",
            "notes.txt": "not a status file",
            "bad name.json": "not a status file",
            "fifo.json": "FIFO",
            "huge.json": "exceeds the 1048576-byte limit",
        }
        wait_until(lambda: set(expected) <= set(cache.health().invalid_files), message="reports")
        cache.rescan()
        invalid = cache.health().invalid_files
        for name, reason in expected.items():
            assert reason in invalid[name], (name, invalid[name])
        assert set(cache.snapshot()) == {"target"}

    def test_stale_seq_is_not_accepted(self, store: FolderStore, cache: StatusCache) -> None:
        store.update("a", progress=0.1)
        old = (store.directory / "a.json").read_bytes()
        store.update("a", progress=0.2)
        wait_until(job_in(cache, "a", seq=2))
        (store.directory / "a.json").write_bytes(old)  # a backup of seq 1 put back
        wait_until(
            lambda: "stale record (seq 1 < 2" in (self.invalid(cache, "a.json") or ""),
            message="stale reported",
        )
        assert cache.get("a").seq == 2  # type: ignore[union-attr]

    def test_recreated_job_starts_a_new_incarnation(
        self, store: FolderStore, cache: StatusCache
    ) -> None:
        for _ in range(3):
            store.update("a")
        wait_until(job_in(cache, "a", seq=3))
        cache.close()  # no events: the delete is never seen by this cache
        store.delete("a")
        store.update("a", message="again")
        assert cache.rescan()["a"].seq == 1


class TestRecovery:
    """Invariant 3: convergence after lost events, a dead observer, a deleted folder."""

    def test_reconcile_catches_changes_no_event_reported(self, store: FolderStore) -> None:
        # A polling observer that never gets to poll: only the reconcile can see changes.
        with StatusCache(
            store.directory, polling=True, poll_interval=3600, reconcile_interval=0.2
        ) as cache:
            store.update("quiet", progress=0.7)
            wait_until(job_in(cache, "quiet", progress=0.7), message="reconcile")
            assert cache.health().rescans >= 1
            assert cache.health().events == 0

    def test_unchanged_files_are_not_reread(self, store: FolderStore) -> None:
        import sys

        for i in range(20):
            store.update(f"j{i}")
        # Polling that never polls: only rescan() reads, so every open counted is its own.
        with StatusCache(store.directory, polling=True, poll_interval=3600) as cache:
            reads: list[str] = []
            counting = threading.Event()

            def hook(event: str, args: tuple[object, ...]) -> None:
                if counting.is_set() and event == "open" and str(args[0]).endswith(".json"):
                    reads.append(Path(str(args[0])).name)

            sys.addaudithook(hook)
            counting.set()
            cache.rescan()
            counting.clear()
            assert reads == []  # stat signatures matched: nothing opened
            store.update("j3", progress=1.0)
            counting.set()
            cache.rescan()
            counting.clear()
            assert reads == ["j3.json"]
            assert cache.get("j3").progress == 1.0  # type: ignore[union-attr]

    def test_overflow_log_line_triggers_rescan(self, store: FolderStore) -> None:
        with StatusCache(store.directory, polling=True, poll_interval=3600) as cache:
            store.update("lost")
            rescans = cache.health().rescans
            # watchdog 7.1 only logs an inotify overflow; this is that exact log call.
            logging.getLogger("watchdog.observers.inotify_c").warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            wait_until(lambda: "lost" in cache.snapshot(), message="rescan after overflow")
            assert cache.health().rescans > rescans

    def test_dead_observer_is_restarted(self, store: FolderStore, cache: FolderCache) -> None:
        assert cache._watch is not None
        cache._watch.observer.stop()  # the observer thread dies
        cache._watch.observer.join(5)
        store.update("after", progress=0.5)
        wait_until(lambda: cache.health().observer_restarts >= 1, message="restart")
        wait_until(job_in(cache, "after", progress=0.5), message="seen after restart")
        store.update("after", progress=0.8)
        wait_until(job_in(cache, "after", progress=0.8), message="events flow again")

    def test_handler_exception_does_not_kill_events(
        self, store: FolderStore, cache: FolderCache, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert cache._watch is not None
        handler = cache._watch._handler
        assert handler._sink() is cache  # the handler holds the cache weakly
        original = cache
        calls = {"n": 0}

        class Exploding:
            def names_changed(self, names: list[str]) -> None:
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("handler bug")
                original.names_changed(names)

            def folder_changed(self) -> None:
                original.folder_changed()

            def events_lost(self) -> None:
                original.events_lost()

            def event_seen(self) -> None:
                original.event_seen()

        exploding = Exploding()
        handler._sink = lambda: exploding
        with caplog.at_level(logging.ERROR):
            store.update("x", progress=0.1)
            wait_until(lambda: calls["n"] >= 1)
            store.update("x", progress=0.2)
            wait_until(job_in(cache, "x", progress=0.2), message="events after handler error")
        assert "handler bug" in caplog.text

    @pytest.mark.slow
    def test_folder_deleted_and_recreated(self, store: FolderStore, cache: StatusCache) -> None:
        store.update("a")
        wait_until(lambda: "a" in cache.snapshot())
        shutil.rmtree(store.directory)
        wait_until(lambda: "a" not in cache.snapshot(), message="deletion seen")
        wait_until(lambda: not cache.health().directory_present)
        store.directory.mkdir()
        fresh = StatusStore(store.directory)
        fresh.update("b", progress=0.1)
        wait_until(job_in(cache, "b", progress=0.1), message="new folder watched")
        fresh.update("b", progress=0.2)
        wait_until(job_in(cache, "b", progress=0.2), message="events from new folder")

    @pytest.mark.slow
    def test_folder_replaced_by_a_file(self, store: FolderStore, cache: StatusCache) -> None:
        store.update("a")
        wait_until(lambda: "a" in cache.snapshot())
        shutil.rmtree(store.directory)
        store.directory.write_text("not a folder")
        wait_until(lambda: "a" not in cache.snapshot())
        wait_until(lambda: not cache.health().directory_present, message="file noticed")
        store.directory.unlink()
        store.directory.mkdir()
        StatusStore(store.directory).update("c")
        wait_until(lambda: "c" in cache.snapshot(), message="recovered")


class TestNoIOOnReadPath:
    """Invariant 2: snapshot() and lookups do no system call the audit hooks can see."""

    def test_read_path_is_io_free(self, store: FolderStore, cache: StatusCache) -> None:
        import sys

        for i in range(50):
            store.update(f"j{i}", batch_id=f"b{i % 3}", progress=0.5)
        wait_until(lambda: len(cache.snapshot()) == 50)
        me = threading.get_ident()
        watching = threading.Event()
        seen: list[str] = []
        watched = (
            "open",
            "os.listdir",
            "os.scandir",
            "fcntl.flock",
            "fcntl.lockf",
            "os.chmod",
            "os.remove",
            "os.rename",
            "msvcrt.locking",
        )

        def hook(event: str, args: tuple[object, ...]) -> None:
            if watching.is_set() and threading.get_ident() == me and event in watched:
                seen.append(event)

        sys.addaudithook(hook)
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                store.update(f"j{i % 50}", progress=(i % 10) / 10)
                i += 1

        w = threading.Thread(target=writer)
        w.start()
        try:
            watching.set()
            for _ in range(2000):
                snap = cache.snapshot()
                snap.get("j1")
                _ = "j2" in snap
                _ = [job.progress for job in snap.values()]
                snap.summary()
                snap.summary("b1")
                snap.batch("b2")
                cache.get("j3")
                cache.health()
            watching.clear()
            # Sanity: the hook does see I/O on this thread when there is some (a store
            # that never wrote j1 opens its file; the writer's own store would lstat it).
            reader = StatusStore(store.location)
            watching.set()
            reader.read("j1")
            watching.clear()
        finally:
            stop.set()
            w.join()
        assert seen == ["open"], seen


def test_rescan_after_close_starts_no_observer(status_dir: Path) -> None:
    store = StatusStore(status_dir)
    cache = StatusCache(status_dir)
    cache.close()
    before = {t.name for t in threading.enumerate()}
    store.update("late", status="running")
    assert "late" in cache.rescan()  # still catches up with the folder, in place
    assert {t.name for t in threading.enumerate()} <= before
    assert not cache.health().running
