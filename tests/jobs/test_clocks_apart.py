"""Writers on another host whose clock is apart from ours (issue 26 item 3).

The writer is a real process whose timestamps are shifted (its store's clock, in that
process only); the queue, its cache and the views run here on the true clock.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from statusbridge import BatchQueue, BatchStatus, StatusStore
from statusbridge.display import elapsed_seconds
from statusbridge.record._model import utc_now

from support.clock_workers import finished_writer, shifted_writer
from support.waiting import wait_until

FIVE_MINUTES = 300.0


class Writer:
    """``shifted_writer`` in a spawned process; ``stop()`` lets it end (and write its end)."""

    def __init__(self, location: str, shift: float, folder: Path, *, final: bool) -> None:
        self.folder = folder
        self.process = mp.get_context("spawn").Process(
            target=shifted_writer, args=(location, "remote", shift, str(folder), final)
        )
        self.process.start()

    def beats(self) -> int:
        try:
            return int((self.folder / "beats").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop(self) -> None:
        (self.folder / "stop").touch()
        self.process.join(60)
        assert self.process.exitcode == 0


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        (writer.folder / "stop").touch()
        writer.process.join(60)
        if writer.process.is_alive():
            writer.process.kill()


@pytest.mark.parametrize("shift", [-FIVE_MINUTES, FIVE_MINUTES], ids=["behind", "ahead"])
def test_a_live_worker_with_a_clock_apart_is_alive_and_its_elapsed_time_true(
    location: str, tmp_path: Path, writers: list[Writer], shift: float
) -> None:
    with BatchQueue(status_dir=location, heartbeat_timeout=60) as queue:
        writer = Writer(location, shift, tmp_path, final=True)
        writers.append(writer)
        wait_until(lambda: writer.beats() >= 3, 60, "the worker's heartbeats")
        seen = wait_until(lambda: queue.cache.get("remote"), 60, "the worker's record")
        wait_until(lambda: queue.cache.get("remote") != seen, 60, "a heartbeat seen by the cache")
        # Before: "worker died: no heartbeat from hostB:4242 for over 60s" at once (behind).
        assert queue.maintain().died == ()
        job = queue.cache.get("remote")
        assert job is not None and job.status is BatchStatus.RUNNING
        # Before: 5m 00s for a job just started (behind), 0 s for ever (ahead).
        elapsed = elapsed_seconds(job, utc_now())
        assert job.started_at is not None and job.updated_at is not None
        assert elapsed == max(0.0, (job.updated_at - job.started_at).total_seconds())
        assert elapsed is not None and elapsed < FIVE_MINUTES
        skew = queue.cache.health().clock_skew or ""
        assert "clock skew" in skew and "hostB:4242" in skew
        assert ("behind" if shift < 0 else "ahead of") in skew
        # A judgement from elsewhere that the job outlived; then its real end.
        StatusStore(location).update("remote", status="failed", error_message="worker died")
        writer.stop()
        final = wait_until(
            lambda: (j := queue.cache.get("remote")) and j.status is BatchStatus.COMPLETED and j,
            60,
            "the final record",
        )
        assert final.error_message is None  # before: "worker died" kept beside COMPLETED


def test_a_worker_with_a_clock_behind_that_stops_is_failed_a_timeout_after_its_last_beat(
    tmp_path: Path, writers: list[Writer]
) -> None:
    folder = str(tmp_path / "status")
    with BatchQueue(status_dir=folder, heartbeat_timeout=60) as queue:
        writer = Writer(folder, -FIVE_MINUTES, tmp_path, final=False)
        writers.append(writer)
        wait_until(lambda: writer.beats() >= 2, 60, "the worker's heartbeats")
        writer.stop()  # no more heartbeats
        last = StatusStore(folder).read("remote")
        wait_until(lambda: queue.cache.get("remote") == last, 60, "the last heartbeat")
        assert queue.maintain().died == ()
        # Counted from when this process saw the last heartbeat: not yet, then over 60 s.
        assert queue.maintain(now=queue._clock() + timedelta(seconds=30)).died == ()
        assert queue.maintain(now=queue._clock() + timedelta(seconds=61)).died == ("remote",)
    job = StatusStore(folder).read("remote")
    assert job is not None and job.status is BatchStatus.FAILED
    assert "no heartbeat from hostB:4242" in (job.error_message or "")


def test_a_job_finished_on_a_clock_a_day_behind_is_kept_for_the_retention_period(
    tmp_path: Path,
) -> None:
    folder = str(tmp_path / "status")
    with BatchQueue(status_dir=folder, retention_hours=24) as queue:
        process = mp.get_context("spawn").Process(
            target=finished_writer, args=(folder, "done", -25 * 3600.0)
        )
        process.start()
        process.join(60)
        assert process.exitcode == 0
        wait_until(lambda: (j := queue.cache.get("done")) and j.is_finished, 60, "the finished job")
        # Before: its completed_at looked 25 h old, and the record was deleted at once.
        assert queue.maintain().removed == ()
        assert queue.store.read("done") is not None
        # 24 h after this process saw it finish (looked ahead, not waited for), it goes.
        assert queue.maintain(now=queue._clock() + timedelta(hours=23)).removed == ()
        assert queue.maintain(now=queue._clock() + timedelta(hours=25)).removed == ("done",)
