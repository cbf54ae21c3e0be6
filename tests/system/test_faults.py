"""Fault injection: kill, flood, break, fill and lie to statusbridge, for real, and see it hold.

Random faults repeat with several seeds, bounded in time. Faults that need root
(a tiny tmpfs, an immutable folder, a device node) are skipped with the reason
when they cannot be produced here.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from statusbridge import (
    InvalidRecordError,
    StatusBridgeError,
    StatusCache,
    StatusStore,
    UnsafeFolderError,
)
from statusbridge.record import validate_job_id
from statusbridge.record._model import FIELD_NAMES
from statusbridge.store.folder._store import FolderStore

from support.platform import needs_inotify
from support.waiting import wait_until
from support.workers import acked_writer, rename_all

SPAWN = mp.get_context("spawn")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- kills --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_never_loses_an_acknowledged_update(tmp_path: Path, seed: int) -> None:
    folder, acks = tmp_path / "s", tmp_path / "acks"
    acks.touch()
    proc = SPAWN.Process(target=acked_writer, args=(str(folder), "j", str(acks), seed))
    proc.start()
    wait_until(lambda: acks.read_text().count("\n") >= 5, 60, "some acknowledged writes")
    time.sleep(random.Random(seed).uniform(0.0, 0.3))  # the random moment is the fault itself
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    acked = [int(x) for x in acks.read_text().split()]
    job = StatusStore(folder).read("j")  # parses: no torn record
    assert job is not None
    assert job.meta["i"] >= acked[-1]  # the last acknowledged update is on disk
    assert job.seq == job.meta["i"] + 1


# -- floods, dead threads, failing decoders -----------------------------------------------------

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def start_renamer(
    staging: Path, folder: Path, n: int, go: Path
) -> tuple[mp.process.BaseProcess, Any]:
    """A process that renames n records from staging into folder once ``go`` exists."""
    renamed = SPAWN.RawValue("q", 0)  # shared memory: reading it makes no system call
    renamer = SPAWN.Process(
        target=rename_all, args=(str(staging), str(folder), n, str(go), renamed)
    )
    renamer.start()
    return renamer, renamed


def hold_the_gil_while_renaming(go: Path, renamed: Any, count: int) -> None:
    """Keep this process busy holding the GIL, as a loaded app would, until ``count`` renames.

    watchdog's reader thread cannot drain the kernel queue meanwhile. The spin reads only
    shared memory and the clock (no system call, so the GIL is never given up) and the
    switch interval outlasts it: no other thread of this process runs until the renamer
    is ``count`` renames in, however fast or slow it goes; a stalled renamer fails the test.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(300.0)
    try:
        go.touch()
        deadline = time.monotonic() + 120
        while renamed.value < count and time.monotonic() < deadline:
            pass
    finally:
        sys.setswitchinterval(interval)
    assert renamed.value >= count, f"the renamer stalled after {renamed.value} renames"


@needs_inotify
def test_burst_larger_than_the_inotify_queue(tmp_path: Path) -> None:
    """50,000 new files while the cache's process is busy: the kernel queue overflows."""
    if not (IS_ROOT and MAX_QUEUED.exists()):
        pytest.skip("needs root and Linux inotify to shrink max_queued_events")
    folder, staging, go = tmp_path / "s", tmp_path / "staging", tmp_path / "go"
    folder.mkdir()
    store = StatusStore(staging)
    for i in range(50_000):
        store.update(f"b{i}")
    original = MAX_QUEUED.read_text()
    try:
        MAX_QUEUED.write_text("1024")  # applies to inotify instances created from now on
        cache = StatusCache(folder, reconcile_interval=3600)  # only events or overflow can help
    finally:
        MAX_QUEUED.write_text(original)
    renamer, renamed = start_renamer(staging, folder, 50_000, go)
    with cache:
        hold_the_gil_while_renaming(go, renamed, 8 * 1024)  # 8 queues' worth
        renamer.join(120)
        assert renamer.exitcode == 0
        wait_until(lambda: len(cache.snapshot()) == 50_000, 120, "convergence after overflow")
        health = cache.health()
        assert health.events < 50_000  # events were lost...
        assert health.rescans >= 1  # ...noticed (watchdog's overflow log line) and rescanned


@needs_inotify
def test_overflow_is_noticed_whatever_the_logging_config(tmp_path: Path) -> None:
    """A real overflow while the application has silenced watchdog's logger."""
    if not (IS_ROOT and MAX_QUEUED.exists()):
        pytest.skip("needs root and Linux inotify to shrink max_queued_events")
    n = 3000
    folder, staging, go = tmp_path / "s", tmp_path / "staging", tmp_path / "go"
    folder.mkdir()
    store = StatusStore(staging)
    for i in range(n):
        store.update(f"b{i}")
    watchdog_logger = logging.getLogger("watchdog")
    level = watchdog_logger.level
    watchdog_logger.setLevel(logging.ERROR)  # the app wants no watchdog warnings
    original = MAX_QUEUED.read_text()
    try:
        MAX_QUEUED.write_text("64")  # applies to inotify instances created from now on
        try:
            cache = StatusCache(folder, reconcile_interval=3600)  # events or overflow only
        finally:
            MAX_QUEUED.write_text(original)
        renamer, renamed = start_renamer(staging, folder, n, go)
        with cache:
            hold_the_gil_while_renaming(go, renamed, 8 * 64)  # 8 queues' worth
            renamer.join(120)
            assert renamer.exitcode == 0
            wait_until(lambda: len(cache.snapshot()) == n, 60, "convergence after overflow")
            health = cache.health()
            assert health.events < n  # events were lost...
            assert health.rescans >= 1  # ...and noticed, with watchdog's log line filtered out
    finally:
        watchdog_logger.setLevel(level)


def test_decode_raising_is_contained(
    store: FolderStore, cache: StatusCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mock: a decoder bug cannot be produced by input (the decoder is total); inject one.
    import statusbridge.cache.folder._cache as cache_module

    real = cache_module.read_record_file  # type: ignore[attr-defined]

    def buggy(path: str, **kw: object):  # type: ignore[no-untyped-def]
        if os.path.basename(path) == "cursed.json":
            raise RuntimeError("decoder bug")
        return real(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module, "read_record_file", buggy)
    store.update("cursed")
    store.update("fine", progress=0.5)
    wait_until(lambda: "fine" in cache.snapshot(), message="other files still applied")
    wait_until(lambda: "cursed.json" in cache.health().invalid_files)
    health = cache.health()
    assert "internal error while reading: RuntimeError: decoder bug" in health.invalid_files[
        "cursed.json"]  # fmt: skip
    assert health.running and health.last_error
    store.update("fine", progress=0.6)
    wait_until(lambda: cache.get("fine").progress == 0.6)  # type: ignore[union-attr]


# -- the folder under attack ----------------------------------------------------------------------


def test_read_only_folder(status_dir: Path) -> None:
    if not IS_ROOT or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr (as root, permission bits do not stop writes)")
    store = StatusStore(status_dir)
    good = store.update("j", progress=0.1)
    os.makedirs(status_dir / ".tmp", exist_ok=True)
    if subprocess.run(["chattr", "+i", str(status_dir / ".tmp")], check=False).returncode:
        pytest.skip("this file system does not support the immutable attribute")
    try:
        with pytest.raises(PermissionError) as info:
            store.update("j", progress=0.9)
        assert str(status_dir / ".tmp") in str(info.value)
        assert store.read("j") == good
    finally:
        subprocess.run(["chattr", "-i", str(status_dir / ".tmp")], check=True)
    assert store.update("j", progress=0.9).progress == 0.9  # recovered


def test_temp_folder_replaced_by_a_symlink(
    status_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StatusStore(status_dir)
    store.update("j", progress=0.1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".old.1-1.tmp").write_text("not ours to remove")
    past = time.time() - 3600
    os.utime(elsewhere / ".old.1-1.tmp", (past, past))
    os.utime(elsewhere, (past, past))  # any file made or renamed in it would change this
    before = os.stat(elsewhere)
    shutil.rmtree(status_dir / ".tmp")
    (status_dir / ".tmp").symlink_to(elsewhere)
    with caplog.at_level("WARNING", logger="statusbridge"):
        assert StatusStore(status_dir).update("j", progress=0.2).seq == 2
    assert "was a symbolic link" in caplog.text
    assert (status_dir / ".tmp").is_dir() and not (status_dir / ".tmp").is_symlink()
    after = os.stat(elsewhere)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    assert os.listdir(elsewhere) == [".old.1-1.tmp"]  # nothing written, nothing swept there
    assert StatusStore(status_dir).read("j").progress == 0.2  # type: ignore[union-attr]


def test_temp_folder_that_is_a_file_is_refused(status_dir: Path) -> None:
    store = StatusStore(status_dir)
    good = store.update("j", progress=0.1)
    shutil.rmtree(status_dir / ".tmp")
    (status_dir / ".tmp").write_text("someone's notes")
    with pytest.raises(UnsafeFolderError, match=r"\.tmp is not a folder") as info:
        store.update("j", progress=0.2)
    assert isinstance(info.value, StatusBridgeError)
    assert info.value.path == str(status_dir / ".tmp")
    assert (status_dir / ".tmp").read_text() == "someone's notes"
    assert store.read("j") == good


def test_temp_folder_of_another_user_is_refused(status_dir: Path) -> None:
    if not IS_ROOT:
        pytest.skip("giving a folder to another user needs root")
    store = StatusStore(status_dir)
    good = store.update("j", progress=0.1)
    os.chown(status_dir / ".tmp", 65534, 65534)  # nobody
    with pytest.raises(UnsafeFolderError, match="belongs to uid 65534, neither to this user"):
        store.update("j", progress=0.2)
    assert store.read("j") == good
    assert os.listdir(status_dir / ".tmp") == []
    shared = StatusStore(status_dir, dir_mode=0o770)  # shared on purpose: any writer's folder
    assert shared.update("j", progress=0.3).seq == 2


def test_undeletable_symlink_in_place_of_the_temp_folder(status_dir: Path, tmp_path: Path) -> None:
    if not IS_ROOT or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a folder's entries undeletable")
    store = StatusStore(status_dir)
    good = store.update("j", progress=0.1)
    shutil.rmtree(status_dir / ".tmp")
    (tmp_path / "elsewhere").mkdir()
    (status_dir / ".tmp").symlink_to(tmp_path / "elsewhere")
    if subprocess.run(["chattr", "+i", str(status_dir)], check=False).returncode:
        pytest.skip("this file system does not support the immutable attribute")
    try:
        with pytest.raises(UnsafeFolderError, match="symbolic link.*cannot be removed"):
            store.update("j", progress=0.2)
    finally:
        subprocess.run(["chattr", "-i", str(status_dir)], check=True)
    assert os.listdir(tmp_path / "elsewhere") == []
    assert store.read("j") == good


def fill(path: Path) -> None:
    """Write until the file system is full (unbuffered: the error comes from write)."""
    with open(path, "wb", buffering=0) as f:
        while True:
            f.write(b"x" * 4096)


def test_full_disk_real_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not IS_ROOT or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False,
        capture_output=True,
    ).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    store = None
    try:
        store = StatusStore(mnt / "s")
        good = store.update("j", message="small")
        filler = mnt / "filler"
        with pytest.raises(OSError, match="No space"):
            fill(filler)
        with pytest.raises(OSError, match="No space left") as info:
            store.update("j", message="y" * 100_000)
        assert info.value.errno == errno.ENOSPC
        assert str(mnt / "s") in str(info.value)
        assert store.read("j") == good
        assert not [n for n in os.listdir(mnt / "s" / ".tmp")]  # no half temp file left
        filler.unlink()
        assert store.update("j", message="y" * 100_000).seq == 2  # recovered
    finally:
        if store is not None:
            store.close()  # its lock descriptors would keep the mount busy
        if subprocess.run(["umount", str(mnt)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_clock_going_backwards(status_dir: Path) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    ticks = iter([t0, t0 - timedelta(hours=1), t0 - timedelta(days=3)])
    store = StatusStore(status_dir, clock=lambda: next(ticks))
    with StatusCache(status_dir) as cache:
        for progress in (0.1, 0.2, 0.3):
            store.update("j", progress=progress)
        wait_until(lambda: (j := cache.get("j")) is not None and j.seq == 3)
        job = cache.get("j")
        assert job is not None
        assert job.progress == 0.3  # seq decides what is newer, not timestamps
        assert job.updated_at == t0 - timedelta(days=3)


# -- bad input and security ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["../x", "..", "/etc/passwd", "C:\\x", "a\\b", "a/b", "x\x00y", "\u0458ob",  # Cyrillic j
     "\uff4aob", "job\u200b", "a" * 129, "CON", "con.json", "NUL", "aux.txt", "COM1", "LPT9",
     "x.", "-x", "_x", ".x", " x", "x ", "x\n", ""],
)  # fmt: skip
def test_job_ids_refused(bad: str, status_dir: Path) -> None:
    with pytest.raises(ValueError, match="invalid job id"):
        validate_job_id(bad)
    with pytest.raises(ValueError, match="invalid job id"):
        StatusStore(status_dir).update(bad)
    assert os.listdir(status_dir) == [] or set(os.listdir(status_dir)) <= {".tmp"}


def test_device_files_are_never_opened(store: FolderStore, cache: StatusCache) -> None:
    if not IS_ROOT:
        pytest.skip("creating a device node needs root")
    os.mknod(store.directory / "dev.json", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
    wait_until(lambda: "dev.json" in cache.health().invalid_files, message="device reported")
    assert cache.health().invalid_files["dev.json"] == "not a regular file"


def test_hard_links_are_refused(store: FolderStore, cache: StatusCache, tmp_path: Path) -> None:
    outside = tmp_path / "secret.json"
    store.update("donor")
    shutil.copy(store.directory / "donor.json", outside)
    doc = json.loads(outside.read_text())
    doc["id"] = "linked"
    outside.write_text(json.dumps(doc))
    os.link(outside, store.directory / "linked.json")
    wait_until(lambda: "linked.json" in cache.health().invalid_files)
    assert "hard links" in cache.health().invalid_files["linked.json"]
    assert "linked" not in cache.snapshot()


WRONG_TYPES: dict[str, object] = {
    "id": 5, "status": 3, "params": None, "result": None, "error_message": 7, "progress": "x",
    "message": ["m"], "batch_id": 1, "meta": "m", "created_at": 5, "started_at": [],
    "completed_at": {}, "updated_at": True, "seq": "1", "owner": 9, "owner_start": "s",
    "owner_machine": 7, "cancel_requested": "yes", "heartbeat_at": 1.5,
}  # fmt: skip


@pytest.mark.parametrize("field", [f for f in FIELD_NAMES if f not in ("params", "result")])
def test_wrong_type_in_every_field(field: str, store: FolderStore, cache: StatusCache) -> None:
    good = store.update("j", progress=0.5)
    wait_until(lambda: cache.get("j") == good)
    doc = json.loads((store.directory / "j.json").read_text())
    doc[field] = WRONG_TYPES[field]
    (store.directory / "j.json").write_text(json.dumps(doc))
    wait_until(lambda: cache.health().invalid_files.get("j.json", "").startswith(
        (field, f"'{field}'", f"missing or non-string '{field}'")),
        message=f"{field} refused with its name",
    )  # fmt: skip
    assert cache.get("j") == good  # the last good record stays
    with pytest.raises(InvalidRecordError):
        store.read("j")


def test_private_permissions_by_default(status_dir: Path) -> None:
    folder = status_dir / "new"
    store = StatusStore(folder)
    store.update("j")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / ".tmp").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "j.json").st_mode) == 0o600
    locks = [n for n in os.listdir(folder) if n.startswith(".lock-")]
    assert all(stat.S_IMODE(os.stat(folder / n).st_mode) == 0o600 for n in locks)


def test_shared_permissions_when_asked(status_dir: Path) -> None:
    old = os.umask(0o002)
    try:
        store = StatusStore(status_dir / "shared", file_mode=0o664, dir_mode=0o775)
        store.update("j")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(status_dir / "shared").st_mode) == 0o775
    assert stat.S_IMODE(os.stat(status_dir / "shared" / "j.json").st_mode) == 0o664


MAX_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@needs_inotify
def test_inotify_limit_reached_falls_back_to_polling(
    status_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not (IS_ROOT and MAX_INSTANCES.exists()):
        pytest.skip("needs root and Linux inotify to lower max_user_instances")
    original = MAX_INSTANCES.read_text()
    try:
        MAX_INSTANCES.write_text("0")  # no new inotify instance can be created now
        with caplog.at_level("WARNING", logger="statusbridge"):
            cache = StatusCache(status_dir, poll_interval=0.1)
    finally:
        MAX_INSTANCES.write_text(original)
    with cache:
        assert cache.health().backend == "polling"
        assert "inotify instance limit reached" in (cache.health().backend_note or "")
        assert "polling" in caplog.text and "unavailable" in caplog.text
        StatusStore(status_dir).update("j", progress=0.3)
        wait_until(lambda: cache.get("j") is not None, 10, "polled change")
