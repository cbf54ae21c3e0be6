"""Write-through: a process's own writes reach its own cache without the cache reading them.

The folder cache here polls once an hour and reconciles once an hour, so a write
reaches it only through ``absorb``; a second store without write-through stands for
another process, and shows that the slow watch really is slow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from statusbridge import StatusCache, StatusStore
from statusbridge.record import BatchJob

from support.waiting import wait_until

HOUR = 3600.0


@pytest.fixture
def slow_cache(tmp_path: Path) -> Iterator[StatusCache]:
    with StatusCache(tmp_path, polling=True, poll_interval=HOUR, reconcile_interval=HOUR) as cache:
        yield cache


def test_an_own_write_is_shown_without_its_file_event(
    tmp_path: Path, slow_cache: StatusCache
) -> None:
    mine, other = StatusStore(tmp_path), StatusStore(tmp_path)
    slow_cache.write_through(mine)
    other.update("theirs", progress=0.5)
    written = mine.update("ours", status="running", progress=0.25)
    shown = wait_until(lambda: slow_cache.get("ours"), message="the own write in the cache")
    assert shown is written  # the record handed over, not a decoded copy
    assert slow_cache.get("theirs") is None  # the watch is as slow as it should be
    assert slow_cache.rescan().get("theirs") is not None


def _captured(store: StatusStore) -> list[tuple[BatchJob, object]]:
    seen: list[tuple[BatchJob, object]] = []
    store.on_written(lambda job, version: seen.append((job, version)))
    return seen


def test_a_record_replaced_or_removed_since_its_write_is_not_shown(
    tmp_path: Path, slow_cache: StatusCache
) -> None:
    mine, other = StatusStore(tmp_path), StatusStore(tmp_path)
    handed = _captured(mine)
    mine.update("replaced", progress=0.1)
    mine.update("removed", progress=0.2)
    other.update("replaced", progress=0.9)  # another writer replaced the file since
    other.delete("removed")
    for job, version in handed:
        slow_cache.absorb(job, version)
    slow_cache.write_through(mine)
    mine.update("marker")  # absorbed after the two above, in the same step or a later one
    wait_until(lambda: slow_cache.get("marker"), message="the marker in the cache")
    assert slow_cache.get("replaced") is None
    assert slow_cache.get("removed") is None
    snap = slow_cache.rescan()
    replaced = snap.get("replaced")
    assert replaced is not None and replaced.progress == 0.9
    assert snap.get("removed") is None


def test_sqlite_cache_takes_its_own_rows_without_decoding_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    with StatusStore(url) as mine, StatusStore(url) as other, StatusCache(url) as cache:
        cache.write_through(mine)
        written = mine.update("ours", progress=0.5)
        theirs = other.update("theirs", progress=0.5)
        wait_until(lambda: cache.get("ours") and cache.get("theirs"), message="both rows")
        assert cache.get("ours") is written
        seen = cache.get("theirs")
        assert seen == theirs and seen is not theirs  # decoded from the row


def test_a_listener_that_raises_is_logged_and_the_write_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StatusStore(tmp_path)
    calls: list[str] = []

    def broken(job: BatchJob, version: object) -> None:
        calls.append(job.id)
        raise RuntimeError("listener bug")

    undo = store.on_written(broken)
    with caplog.at_level(logging.ERROR, logger="statusbridge.store._store"):
        job = store.update("a", progress=0.5)
    assert store.read("a") == job
    assert calls == ["a"]
    assert "listener bug" in caplog.text
    undo()
    store.update("a", progress=0.6)
    assert calls == ["a"]


@contextmanager
def cache_thread_held(cache: StatusCache, other: StatusStore) -> Iterator[None]:
    """The cache thread held inside a subscriber while the body writes: whatever the body
    writes reaches the cache in its next read, after every write-through handover."""
    arrived, gate = threading.Event(), threading.Event()

    def hold(snapshot: object, changed: frozenset[str]) -> None:
        if "gate" in changed:
            arrived.set()
            gate.wait(60)

    undo = cache.subscribe(hold)
    try:
        other.update("gate")
        assert arrived.wait(30), "the cache never saw the gate record"
        yield
    finally:
        gate.set()
        undo()


@pytest.mark.slow
def test_redis_cache_takes_its_own_writes_without_reading_them(redis_url: str) -> None:
    with (
        StatusStore(redis_url) as mine,
        StatusStore(redis_url) as other,
        StatusCache(redis_url) as cache,
    ):
        cache.write_through(mine)
        with cache_thread_held(cache, other):
            written = mine.update("ours", progress=0.5)
            theirs = other.update("theirs", progress=0.5)
            mine.update("overtaken", progress=0.1)
            overtaking = other.update("overtaken", progress=0.9)  # after ours: theirs wins
        wait_until(lambda: cache.get("ours") and cache.get("theirs"), message="both records")
        assert cache.get("ours") is written  # the record handed over, not a decoded copy
        seen = cache.get("theirs")
        assert seen == theirs and seen is not theirs  # read from the server
        assert cache.get("overtaken") == overtaking
        assert cache.health().events == 5  # the gate, then the four writes, each once
