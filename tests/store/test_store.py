"""Layer 2: StatusStore writes are atomic, locked, validated and bounded."""

from __future__ import annotations

import errno
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statusbridge import BatchStatus, InvalidRecordError, LockTimeout, StatusCache, StatusStore
from statusbridge.record import MAX_NESTING
from statusbridge.store.folder import _atomic
from statusbridge.store.folder._locks import STRIPES
from statusbridge.store.folder._store import FolderStore

from support.resources import no_more_than, process_resources, temp_files
from support.waiting import wait_until
from support.workers import hold_lock, set_meta_keys


def nested(levels: int, key: str | None = "k") -> object:
    """``levels`` objects ({"k": ...}) or, with key=None, lists, one inside the other."""
    value: object = 1
    for _ in range(levels):
        value = [value] if key is None else {key: value}
    return value


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def records(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


class TestUpdate:
    def test_creates_then_merges(self, store: FolderStore) -> None:
        first = store.update("j", status=BatchStatus.PENDING, params={"n": 1}, meta={"a": 1})
        assert first.seq == 1
        assert first.created_at is not None and first.created_at == first.updated_at
        second = store.update("j", status="running", meta={"b": 2})
        assert second.seq == 2
        assert second.params == {"n": 1}  # untouched fields kept
        assert dict(second.meta) == {"a": 1, "b": 2}  # meta merged key by key
        assert second.started_at is not None  # RUNNING fills started_at
        third = store.update("j", status="completed", result=[1, 2])
        assert third.completed_at is not None and third.result == (1, 2)
        assert store.read("j") == third

    def test_file_is_schema_1_json_readable_by_hand(self, store: FolderStore) -> None:
        store.update("j", message="hi")
        doc = json.loads((store.directory / "j.json").read_text("utf-8"))
        assert doc["schema"] == 1 and doc["id"] == "j" and doc["message"] == "hi"
        assert datetime.fromisoformat(doc["updated_at"]).utcoffset() == timedelta(0)

    def test_next_update_sees_every_other_writer(self, status_dir: Path) -> None:
        """A store skips re-reading a record it wrote last only while the file is that one:
        another store's write, a foreign edit in place (same size) and a second name
        are each noticed."""
        store, other = StatusStore(status_dir), StatusStore(status_dir)
        store.update("j", message="mine", meta={"a": 1})
        other.update("j", message="theirs", meta={"b": 2})
        merged = store.update("j", progress=0.5)
        assert (merged.message, dict(merged.meta), merged.seq) == ("theirs", {"a": 1, "b": 2}, 3)
        # A foreign program rewrites the file in place, keeping its size.
        path = status_dir / "j.json"
        text = path.read_text()
        edited = text.replace('"theirs"', '"foreig"')
        assert len(edited) == len(text)
        with open(path, "r+") as f:  # in place: same inode
            f.write(edited)
        assert store.update("j", progress=0.6).message == "foreig"
        # A second name: refused like any hard-linked record, not answered from memory.
        os.link(path, status_dir / "copy")
        with pytest.raises(InvalidRecordError, match="hard links"):
            store.update("j", progress=0.7)
        (status_dir / "copy").unlink()
        store.delete("j")
        assert store.update("j", message="new").seq == 1  # deleted: starts over

    def test_clock_is_a_parameter(self, status_dir: Path) -> None:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        store = StatusStore(status_dir, clock=lambda: t0)
        assert store.update("j").updated_at == t0

    def test_durable_writes(self, status_dir: Path) -> None:
        store = StatusStore(status_dir, durable=True)
        assert store.update("j", progress=0.1).progress == 0.1
        assert store.read("j") is not None

    def test_read_missing_is_none(self, store: FolderStore) -> None:
        assert store.read("nope") is None

    def test_read_invalid_raises(self, store: FolderStore) -> None:
        (store.directory / "bad.json").write_text("{")
        with pytest.raises(InvalidRecordError, match="not valid JSON"):
            store.read("bad")

    def test_delete(self, store: FolderStore) -> None:
        store.update("j")
        assert store.delete("j") is True
        assert store.delete("j") is False
        assert records(store.directory) == []

    def test_recreates_deleted_folder(self, store: FolderStore) -> None:
        store.update("j")
        shutil.rmtree(store.directory)
        assert store.update("j").seq == 1
        assert records(store.directory) == ["j.json"]


class TestBadInput:
    """Each bad input: a clear error, and nothing written or lost."""

    @pytest.mark.parametrize("bad", ["../x", "a/b", "", "x\x00", ".hidden", "CON"])
    def test_invalid_ids_touch_nothing(self, store: FolderStore, bad: str) -> None:
        before = files(store.directory)
        for call in (lambda: store.update(bad), lambda: store.read(bad), lambda: store.delete(bad)):
            with pytest.raises(ValueError, match="invalid job id"):
                call()
        assert files(store.directory) == before
        assert not (store.directory.parent / "x").exists()

    def test_unknown_field(self, store: FolderStore) -> None:
        with pytest.raises(TypeError, match="unknown field.*colour.*allowed"):
            store.update("j", colour="red")
        with pytest.raises(TypeError, match="unknown field.*seq"):
            store.update("j", seq=5)
        assert records(store.directory) == []

    def test_not_serialisable_keeps_previous(self, store: FolderStore) -> None:
        good = store.update("j", result={"ok": 1})
        with pytest.raises(TypeError, match="result.x: object is not JSON-serialisable"):
            store.update("j", result={"x": object()})
        with pytest.raises(ValueError, match="NaN and Infinity are refused"):
            store.update("j", meta={"v": float("inf")})
        assert store.read("j") == good

    def test_deep_nesting_is_a_value_error_naming_the_path(self, store: FolderStore) -> None:
        good = store.update("j", params=nested(MAX_NESTING))  # the limit itself is fine
        assert store.read("j") == good
        with pytest.raises(ValueError, match=r"params\.k\.k\.k.*nest more than 100 levels"):
            store.update("j", params=nested(495))  # was RecursionError
        with pytest.raises(ValueError, match=r"meta\.x\[0\]\[0\].*nest more than 100"):
            store.update("j", meta={"x": nested(MAX_NESTING, key=None)})
        with pytest.raises(ValueError, match=r"result\.k: .*nest more than 100"):
            store.update("j", result={"k": good.params})  # a frozen value, one level lower
        assert store.read("j") == good
        assert not temp_files(store.directory)

    def test_progress_out_of_range_keeps_previous(self, store: FolderStore) -> None:
        good = store.update("j", progress=0.2)
        with pytest.raises(ValueError, match="between 0.0 and 1.0, got 1.5"):
            store.update("j", progress=1.5)
        assert store.read("j") == good

    def test_oversized_document(self, status_dir: Path) -> None:
        store = StatusStore(status_dir, max_bytes=2000)
        good = store.update("j", message="small")
        with pytest.raises(ValueError, match=r"would be \d+ bytes; the limit is 2000"):
            store.update("j", message="x" * 5000)
        assert store.read("j") == good
        assert records(status_dir) == ["j.json"]

    def test_refuses_to_overwrite_a_corrupt_file(self, store: FolderStore) -> None:
        (store.directory / "j.json").write_text("garbage")
        with pytest.raises(InvalidRecordError, match="refusing to overwrite"):
            store.update("j", progress=0.5)
        assert (store.directory / "j.json").read_text() == "garbage"

    def test_full_disk_keeps_old_document(
        self, store: FolderStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Mock: a full disk cannot be produced portably in a unit test (the fault
        # suite uses a real small tmpfs where it can). os.write fails with ENOSPC.
        good = store.update("j", progress=0.1)
        real_write = os.write

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(OSError, match="No space left on device") as info:
            store.update("j", progress=0.9)
        monkeypatch.setattr(os, "write", real_write)
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == str(store.directory / "j.json")
        assert store.read("j") == good
        assert not temp_files(store.directory)

    @pytest.mark.slow
    def test_lock_timeout_names_the_job(self, store: FolderStore, tmp_path: Path) -> None:
        ready, release = tmp_path / "ready", tmp_path / "release"
        ctx = mp.get_context("spawn")
        holder = ctx.Process(
            target=hold_lock, args=(str(store.directory), "j", str(ready), str(release))
        )
        holder.start()
        try:
            wait_until(ready.exists, 30, "the other process to hold the lock")
            quick = StatusStore(store.directory, lock_timeout=0.2)
            with pytest.raises(LockTimeout, match="could not lock job 'j' within 0.2s") as info:
                quick.update("j", progress=0.5)
            assert isinstance(info.value, TimeoutError)
            assert quick.read("j") is None
        finally:
            release.touch()
            holder.join(30)
        assert holder.exitcode == 0
        assert quick.update("j", progress=0.5).seq == 1  # free again

    def test_create_absent_leaves_every_file_alone_and_readers_never_see_a_half_made_one(
        self, store: FolderStore
    ) -> None:
        """A batch's PENDING records, while another thread reads and updates the same jobs:
        each read finds no file or a whole record (never a second link to it)."""
        (store.directory / "broken.json").write_text("{not json")
        store.update("kept", message="mine")
        names = [f"p-{i}" for i in range(300)]
        problems: list[Exception] = []
        done = threading.Event()

        def read_along() -> None:
            while not done.is_set():
                for name in names[::7]:
                    try:
                        store.read(name)
                    except Exception as exc:  # the test looks at it
                        problems.append(exc)

        reader = threading.Thread(target=read_along)
        reader.start()
        try:
            created = store.create_absent(
                {n: {"message": "pending"} for n in ["broken", "kept", *names]}
            )
        finally:
            done.set()
            reader.join(30)
        assert problems == []
        assert [job.id for job in created] == names
        assert store.read("p-299") == created[-1]
        assert (store.directory / "broken.json").read_text() == "{not json"
        assert store.read("kept").message == "mine"  # type: ignore[union-attr]
        assert not temp_files(store.directory)

    @pytest.mark.slow
    def test_infinite_lock_timeout_waits_for_the_holder(
        self, store: FolderStore, tmp_path: Path
    ) -> None:
        patient = StatusStore(store.directory, lock_timeout=math.inf)
        assert patient.update("free", progress=0.1).seq == 1  # was OverflowError
        ready, release = tmp_path / "ready", tmp_path / "release"
        holder = mp.get_context("spawn").Process(
            target=hold_lock, args=(str(store.directory), "j", str(ready), str(release))
        )
        holder.start()
        outcome: list[object] = []
        try:
            wait_until(ready.exists, 30, "the other process to hold the lock")
            waiter = threading.Thread(
                target=lambda: outcome.append((patient.update("j").seq, release.exists()))
            )
            waiter.start()
        finally:
            release.touch()
            holder.join(30)
        waiter.join(30)
        assert outcome == [(1, True)]  # it returned only once the holder let go

    @pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf])
    def test_bad_lock_timeouts_are_refused_at_construction(
        self, status_dir: Path, bad: float
    ) -> None:
        with pytest.raises(ValueError, match="lock_timeout must be >= 0"):
            StatusStore(status_dir, lock_timeout=bad)
        store = StatusStore(status_dir)
        with pytest.raises(ValueError, match="lock_timeout must be >= 0"):
            store.lock_timeout = bad
        assert store.lock_timeout == 10.0


class TestWindowsReplace:
    """A reader holding a record open on Windows makes ``os.replace`` fail for a moment.

    Mock: a Windows sharing violation cannot be produced on Linux or macOS (their
    renames never wait for readers), so the PermissionError with its ``winerror``
    is injected into ``os.replace`` for this test's folder, and the Windows branch
    is switched on (``_atomic._IS_WINDOWS``).
    """

    @staticmethod
    def inject(
        monkeypatch: pytest.MonkeyPatch, folder: Path, failures: float, winerror: int | None
    ) -> list[str]:
        calls: list[str] = []
        real_replace = os.replace

        def replace(src: object, dst: object, **kwargs: object) -> None:
            if str(dst).startswith(str(folder)):
                calls.append(str(dst))
                if len(calls) <= failures:
                    exc = PermissionError(errno.EACCES, "being used by another process", str(dst))
                    if winerror is not None:
                        exc.winerror = winerror  # type: ignore[attr-defined]
                    raise exc
            real_replace(src, dst, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "replace", replace)
        return calls

    @pytest.mark.parametrize("winerror", [5, 32])  # ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION
    def test_sharing_violation_is_retried(
        self, store: FolderStore, monkeypatch: pytest.MonkeyPatch, winerror: int
    ) -> None:
        store.update("j", progress=0.1)
        monkeypatch.setattr(_atomic, "_IS_WINDOWS", True)
        calls = self.inject(monkeypatch, store.directory, 3, winerror)
        job = store.update("j", progress=0.9)
        assert len(calls) == 4  # three refusals, then the reader had let go
        assert job.progress == 0.9
        monkeypatch.undo()
        assert store.read("j") == job
        assert not temp_files(store.directory)

    def test_a_reader_that_never_lets_go_fails_after_about_a_second(
        self, store: FolderStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        good = store.update("j", progress=0.1)
        monkeypatch.setattr(_atomic, "_IS_WINDOWS", True)
        calls = self.inject(monkeypatch, store.directory, math.inf, 32)
        # The pauses it asks for, not the time it took: that depends on the machine's load.
        slept: list[float] = []
        me, real_sleep = threading.get_ident(), time.sleep

        def sleep(seconds: float) -> None:  # other threads really sleep
            if threading.get_ident() == me:
                slept.append(seconds)
            else:
                real_sleep(seconds)

        monkeypatch.setattr(time, "sleep", sleep)
        with pytest.raises(PermissionError) as info:
            store.update("j", progress=0.9)
        assert len(calls) == len(_atomic._WINDOWS_REPLACE_DELAYS) + 1
        assert slept == list(_atomic._WINDOWS_REPLACE_DELAYS)  # one pause between tries
        assert 0.9 <= sum(slept) <= 1.1  # bounded: ~1 s of backoff, then the error
        assert info.value.filename == str(store.directory / "j.json")
        monkeypatch.undo()
        assert store.read("j") == good
        assert not temp_files(store.directory)

    @pytest.mark.parametrize(("windows", "winerror"), [(True, None), (True, 2), (False, 32)])
    def test_other_errors_and_other_systems_are_not_retried(
        self,
        store: FolderStore,
        monkeypatch: pytest.MonkeyPatch,
        windows: bool,
        winerror: int | None,
    ) -> None:
        good = store.update("j", progress=0.1)
        monkeypatch.setattr(_atomic, "_IS_WINDOWS", windows)
        calls = self.inject(monkeypatch, store.directory, 1, winerror)
        with pytest.raises(PermissionError):
            store.update("j", progress=0.9)
        assert len(calls) == 1
        monkeypatch.undo()
        assert store.read("j") == good


class TestConcurrency:
    def test_threads_never_lose_an_update(self, store: FolderStore) -> None:
        def work(worker: int) -> None:
            for i in range(50):
                store.update("shared", meta={f"t{worker}": i})

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        job = store.read("shared")
        assert job is not None
        assert job.seq == 8 * 50
        assert dict(job.meta) == {f"t{w}": 49 for w in range(8)}

    @pytest.mark.slow
    def test_processes_never_lose_an_update(self, store: FolderStore) -> None:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=set_meta_keys, args=(str(store.directory), "shared", w, 50))
            for w in range(8)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        job = store.read("shared")
        assert job is not None
        assert job.seq == 8 * 50
        assert dict(job.meta) == {f"w{w}": 49 for w in range(8)}

    def test_fork_child_gets_fresh_locks(self, store: FolderStore) -> None:
        store.update("j")  # opens a lock descriptor in the parent
        ctx = mp.get_context("fork")
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads; that is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            p = ctx.Process(target=set_meta_keys, args=(str(store.directory), "j", 1, 20))
            p.start()
        set_meta_keys(str(store.directory), "j", 0, 20)
        p.join(60)
        assert p.exitcode == 0
        job = store.read("j")
        assert job is not None and job.seq == 41


class TestBounded:
    def test_dropped_stores_release_their_descriptors(self, status_dir: Path) -> None:
        StatusStore(status_dir).update("warm-up")
        gc.collect()
        before = process_resources()
        for i in range(200):
            StatusStore(status_dir).update(f"j{i}")  # opens a lock descriptor; never closed
        gc.collect()  # (refcounting frees them already; this makes sure)
        # Waited on, not asserted at once: a thread or descriptor of an earlier test
        # (random order) may still be on its way out and count here for a moment.
        wait_until(no_more_than(before), 30, f"threads, fds, watches back at {before}")
        store = StatusStore(status_dir)
        store.update("j")
        store.close()
        store.close()  # twice is fine
        assert store.update("j").seq == 2  # and it reopens what it needs
        store.close()
        wait_until(no_more_than(before), 30, f"threads, fds, watches back at {before}")

    def test_lock_files_are_bounded(self, store: FolderStore) -> None:
        for i in range(500):
            store.update(f"job-{i}")
        locks = [n for n in files(store.directory) if n.startswith(".lock-")]
        assert 0 < len(locks) <= STRIPES
        assert not temp_files(store.directory)

    def test_stale_temp_files_removed_at_first_write(self, status_dir: Path) -> None:
        (status_dir / ".tmp").mkdir()
        stale = status_dir / ".tmp" / ".j.999-dead.tmp"
        stale.write_text('{"half')
        stale_beside = status_dir / ".x.997-dead.tmp"  # another writer's, beside the records
        stale_beside.write_text('{"half')
        fresh = status_dir / ".k.998-live.tmp"
        fresh.write_text('{"writing')
        old = datetime.now(UTC).timestamp() - 3600
        os.utime(stale, (old, old))
        os.utime(stale_beside, (old, old))
        store = StatusStore(status_dir)
        assert stale.exists()  # opening a store touches nothing (read-only users can open it)
        store.update("j")
        assert not stale.exists()
        assert not stale_beside.exists()
        assert fresh.exists()  # may belong to a writer still at work

    def test_stale_sweep_takes_regular_files_only(
        self, status_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        inner = status_dir / ".tmp"
        inner.mkdir()
        (inner / ".j.1-1.tmp").write_text("{")
        (status_dir / ".d.tmp").mkdir()  # a folder with a temp file's name
        (tmp_path / "elsewhere").write_text("keep")
        (status_dir / ".l.tmp").symlink_to(tmp_path / "elsewhere")
        old = datetime.now(UTC).timestamp() - 3600
        for path in (inner / ".j.1-1.tmp", status_dir / ".d.tmp", inner):  # .tmp/ is old too
            os.utime(path, (old, old))
        os.utime(status_dir / ".l.tmp", (old, old), follow_symlinks=False)
        with caplog.at_level(logging.INFO, logger="statusbridge"):
            StatusStore(status_dir).update("j")  # sweeps stale temp files
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert "removed 1 stale temp file(s)" in caplog.text
        assert not (inner / ".j.1-1.tmp").exists()
        assert inner.is_dir() and (status_dir / ".d.tmp").is_dir()
        assert (status_dir / ".l.tmp").is_symlink()
        assert (tmp_path / "elsewhere").read_text() == "keep"

    def test_cleanup_by_age_and_count(self, status_dir: Path) -> None:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        clock = [t0]
        store = StatusStore(status_dir, clock=lambda: clock[0])
        for i in range(5):
            clock[0] = t0 + timedelta(minutes=i)
            store.update(f"done-{i}", status="completed")
        store.update("running", status="running")
        store.update("pending")
        later = t0 + timedelta(hours=24, minutes=2, seconds=30)  # done-0..2 are > 24 h old
        assert store.cleanup(max_age_hours=24, now=later, dry_run=True) == 3
        assert len(records(status_dir)) == 7
        assert store.cleanup(max_age_hours=24, now=later) == 3
        assert records(status_dir) == ["done-3.json", "done-4.json", "pending.json", "running.json"]
        assert store.cleanup(max_age_hours=None, max_completed=1, now=later) == 1
        assert records(status_dir) == ["done-4.json", "pending.json", "running.json"]
        assert store.cleanup(max_age_hours=0, max_completed=0, now=later) == 1
        assert records(status_dir) == ["pending.json", "running.json"]

    def test_removal_by_the_cache_s_versions_spares_every_changed_record(
        self, store: FolderStore, status_dir: Path, tmp_path: Path
    ) -> None:
        """Retention's removal judges a record by the file signature the cache read it from:
        a rewrite by another writer, an edit in place (same size) and a second name each
        keep the record, even though this cache has not seen them."""
        names = ["same", "rewritten", "edited", "linked"]
        for name in names:
            store.update(name, status="completed", message="mine")
        # Polls once an hour: it keeps what its first scan read, whatever happens since.
        with StatusCache(status_dir, polling=True, poll_interval=3600) as cache:
            jobs = list(cache.snapshot().values())
            versions = cache.versions_of(jobs)
            assert sorted(versions) == sorted(names)
            StatusStore(status_dir).update("rewritten", status="pending")  # a new run
            path = status_dir / "edited.json"
            text = path.read_text()
            with open(path, "r+") as f:  # in place: same inode, same size
                f.write(text.replace('"mine"', '"your"'))
            os.link(status_dir / "linked.json", tmp_path / "second-name")
            assert cache.snapshot().get("rewritten") is not None  # still the old run here
            assert store.delete_if_unchanged(jobs, versions=versions) == ["same"]
        assert records(status_dir) == ["edited.json", "linked.json", "rewritten.json"]

    def test_versions_only_for_the_records_the_snapshot_shows(
        self, store: FolderStore, cache: StatusCache, status_dir: Path
    ) -> None:
        store.update("old-run", status="completed")
        store.update("bad", status="completed")
        seen = wait_until(lambda: cache.get("old-run") and cache.get("bad"), 10, "the cache")
        old_run, bad = cache.get("old-run"), cache.get("bad")
        assert seen and old_run is not None and bad is not None
        assert sorted(cache.versions_of([old_run, bad])) == ["bad", "old-run"]
        store.update("old-run", status="pending")  # restarted
        (status_dir / "bad.json").write_text("nope")  # invalid now; the cache keeps the last good
        wait_until(lambda: cache.get("old-run") != old_run, 10, "the restart to show")
        wait_until(lambda: "bad.json" in cache.health().invalid_files, 10, "the bad file")
        assert cache.get("bad") is bad
        assert cache.versions_of([old_run, bad]) == {}
        assert store.delete_if_unchanged([old_run, bad], versions={}) == []

    def test_scan_skips_invalid(self, store: FolderStore) -> None:
        store.update("good")
        (store.directory / "bad.json").write_text("nope")
        (store.directory / "notes.txt").write_text("hello")
        assert list(store.scan()) == ["good"]

    def test_scan_report_gives_the_reasons_the_cache_gives(
        self, store: FolderStore, cache: StatusCache
    ) -> None:
        store.update("good")
        (store.directory / "bad.json").write_text("nope")
        (store.directory / "notes.txt").write_text("hello")
        report = store.scan_report()
        assert list(report.jobs) == ["good"]
        assert report.invalid == {
            "bad.json": "not valid JSON: Expecting value at line 1 column 1",
            "notes.txt": "not a status file (expected <job id>.json)",
        }
        assert report.invalid_records() == {"bad.json": report.invalid["bad.json"]}
        wait_until(lambda: cache.health().invalid_files == report.invalid, message="same words")


@pytest.mark.parametrize("kind", ["folder", "sqlite"])
def test_read_of_a_record_this_store_wrote_last_decodes_nothing_and_sees_others(
    tmp_path: Path, kind: str
) -> None:
    """A store's read of its own last write hands back that record (one lstat, or one
    text compare on SQLite); a replace by another writer is read and decoded."""
    where = str(tmp_path) if kind == "folder" else f"sqlite:///{tmp_path}/status.db"
    with StatusStore(where) as mine, StatusStore(where) as other:
        written = mine.update("a", progress=0.25)
        assert mine.read("a") is written
        theirs = other.update("a", progress=0.75)
        seen = mine.read("a")
        assert seen == theirs and seen is not theirs
        other.delete("a")
        assert mine.read("a") is None
