"""Finished-job and finished-batch hooks: once per transition, no history, never break the cache."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from statusbridge import (
    BatchJob,
    BatchStatus,
    BatchSummary,
    StatusCache,
    StatusStore,
    on_batch_finished,
    on_job_finished,
)
from statusbridge.cache._transitions import TransitionTracker

from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Calls:
    """Thread-safe record of hook calls (they run on the cache thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, str]] = []

    def job(self, job: BatchJob) -> None:
        with self.lock:
            self.items.append((job.id, job.status.value))

    def batch(self, summary: BatchSummary, jobs: tuple[BatchJob, ...]) -> None:
        with self.lock:
            self.items.append((summary.id or "", summary.state))
            assert len(jobs) == summary.total

    def __call__(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.items)


def settle(cache: StatusCache, store: StatusStore, job_id: str) -> None:
    """Wait until the cache shows the record the store has now."""
    want = store.read(job_id)
    assert want is not None
    wait_until(lambda: (j := cache.get(job_id)) is not None and j.seq == want.seq)


def test_called_once_per_finish_also_across_rescans_and_later_writes(
    store: StatusStore, cache: StatusCache
) -> None:
    calls = Calls()
    stop = on_job_finished(cache, calls.job)
    store.update("a", status="running", progress=0.5)
    store.update("a", status="failed", error_message="boom")
    wait_until(lambda: calls() == [("a", "failed")])
    store.update("a", meta={"seen": True})  # a later write to a finished record
    settle(cache, store, "a")
    cache.rescan()
    cache.rescan()
    store.update("b", status="completed")  # a job that appears already finished counts
    wait_until(lambda: len(calls()) == 2)
    assert calls() == [("a", "failed"), ("b", "completed")]
    stop()


def test_a_job_run_again_is_reported_again(store: StatusStore, cache: StatusCache) -> None:
    calls = Calls()
    stop = on_job_finished(cache, calls.job)
    store.update("a", status="completed")
    wait_until(lambda: len(calls()) == 1)
    store.update("a", status="running", completed_at=None)
    settle(cache, store, "a")
    store.update("a", status="failed")
    wait_until(lambda: calls() == [("a", "completed"), ("a", "failed")])
    stop()


def test_history_is_skipped_unless_replayed(status_dir: Path, store: StatusStore) -> None:
    store.update("old-ok", status="completed")
    store.update("old-bad", status="failed")
    store.update("live", status="running")
    with StatusCache(status_dir) as cache:
        quiet, replayed = Calls(), Calls()
        stop_quiet = on_job_finished(cache, quiet.job)
        stop_replayed = on_job_finished(cache, replayed.job, replay=True)
        # Replayed history is reported before on_job_finished returns.
        assert sorted(replayed()) == [("old-bad", "failed"), ("old-ok", "completed")]
        store.update("live", status="completed")
        wait_until(lambda: len(quiet()) == 1 and len(replayed()) == 3)
        assert quiet() == [("live", "completed")]
        stop_quiet()
        stop_replayed()


def test_a_record_that_vanishes_and_returns_unchanged_is_not_reported_again(
    status_dir: Path, store: StatusStore, cache: StatusCache
) -> None:
    """What a reload looks like from the read side: the record goes, then the same one is back."""
    calls = Calls()
    stop = on_job_finished(cache, calls.job)
    store.update("a", status="completed")
    wait_until(lambda: len(calls()) == 1)
    path = status_dir / "a.json"
    saved = path.read_bytes()
    path.unlink()
    wait_until(lambda: cache.get("a") is None)
    restore(status_dir, "a", saved)
    wait_until(lambda: cache.get("a") is not None)
    cache.rescan()
    store.update("b", status="completed")  # a marker: everything before it was delivered
    wait_until(lambda: len(calls()) == 2)
    assert calls() == [("a", "completed"), ("b", "completed")]
    stop()


def test_a_raising_hook_is_logged_and_breaks_nothing(
    store: StatusStore, cache: StatusCache, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()

    def broken(job: BatchJob) -> None:
        raise RuntimeError(f"chat server down ({job.id})")

    stop_broken = on_job_finished(cache, broken)
    stop_ok = on_job_finished(cache, calls.job)
    with caplog.at_level(logging.ERROR, logger="statusbridge"):
        store.update("a", status="failed")
        store.update("b", status="completed")
        wait_until(lambda: len(calls()) == 2)
        wait_until(
            lambda: (
                sum(
                    "chat server down" in r.getMessage() or r.exc_info is not None
                    for r in caplog.records
                )
                >= 2
            )
        )
    assert any("hook" in r.getMessage() for r in caplog.records)
    store.update("c", status="running")
    wait_until(lambda: cache.get("c") is not None)  # the cache still follows the folder
    stop_broken()
    stop_ok()


def test_stopped_hooks_are_not_called(store: StatusStore, cache: StatusCache) -> None:
    calls, marker = Calls(), Calls()
    stop = on_job_finished(cache, calls.job)
    stop_marker = on_job_finished(cache, marker.job)
    stop()
    stop()  # twice is fine
    store.update("a", status="completed")
    wait_until(lambda: len(marker()) == 1)
    assert calls() == []
    stop_marker()


def test_batch_hook_fires_once_when_the_last_job_finishes(
    store: StatusStore, cache: StatusCache
) -> None:
    calls = Calls()
    stop = on_batch_finished(cache, calls.batch)
    store.update("a", batch_id="b1", status="running")
    store.update("b", batch_id="b1", status="running")
    settle(cache, store, "b")  # the cache knows both (a batch is as big as the cache knows)
    store.update("a", status="completed")
    settle(cache, store, "a")
    assert calls() == []
    store.update("b", status="failed")
    wait_until(lambda: calls() == [("b1", "failed")])
    cache.rescan()
    store.update("a", meta={"note": "after"})  # a finished batch's record changes, no transition
    settle(cache, store, "a")
    store.update("c", batch_id="b1")  # new work in the batch: unfinished again ...
    settle(cache, store, "c")
    store.update("c", status="completed")  # ... and finished again: reported again
    wait_until(lambda: len(calls()) == 2)
    assert calls() == [("b1", "failed"), ("b1", "failed")]
    stop()


def test_batch_history_is_skipped_unless_replayed(status_dir: Path, store: StatusStore) -> None:
    store.update("a", batch_id="done", status="completed")
    store.update("b", batch_id="open", status="running")
    with StatusCache(status_dir) as cache:
        quiet, replayed = Calls(), Calls()
        stop_quiet = on_batch_finished(cache, quiet.batch)
        stop_replayed = on_batch_finished(cache, replayed.batch, replay=True)
        assert replayed() == [("done", "completed")]
        store.update("b", status="cancelled")
        wait_until(lambda: len(quiet()) == 1 and len(replayed()) == 2)
        assert quiet() == [("open", "cancelled")]
        stop_quiet()
        stop_replayed()


def test_tracker_reports_each_status_entered_with_the_previous_one(
    store: StatusStore, cache: StatusCache
) -> None:
    seen: list[tuple[str, BatchStatus, BatchStatus | None]] = []
    lock = threading.Lock()

    def transition(job: BatchJob, previous: BatchStatus | None) -> None:
        with lock:
            seen.append((job.id, job.status, previous))

    with TransitionTracker(cache, on_transition=transition):
        store.update("a")
        settle(cache, store, "a")
        store.update("a", status="running", progress=0.1)
        settle(cache, store, "a")
        store.update("a", progress=0.2)  # same status: no transition
        settle(cache, store, "a")
        store.update("a", status="completed")
        wait_until(lambda: len(seen) == 3)
    assert seen == [
        ("a", BatchStatus.PENDING, None),
        ("a", BatchStatus.RUNNING, BatchStatus.PENDING),
        ("a", BatchStatus.COMPLETED, BatchStatus.RUNNING),
    ]


WRITER = """
import sys
from statusbridge import StatusStore
store = StatusStore(sys.argv[1])
store.update("fine", status="running", progress=0.5)
store.update("fine", status="completed")
store.update("broken", status="running")
store.update("broken", status="failed", error_message="disk full")
"""


@pytest.mark.slow
def test_alert_example_alerts_new_failures_written_by_another_process(
    status_dir: Path, store: StatusStore
) -> None:
    store.update("old", status="failed", error_message="last week")  # history: no alert
    example = subprocess.Popen(
        [
            sys.executable,
            "-u",
            str(ROOT / "examples" / "alert_failed.py"),
            str(status_dir),
            "--max-alerts",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert example.stdout is not None
        assert example.stdout.readline().startswith("watching ")
        subprocess.run([sys.executable, "-c", WRITER, str(status_dir)], check=True, timeout=60)
        out, err = example.communicate(timeout=60)
    finally:
        if example.poll() is None:
            example.kill()
            example.communicate()
    assert example.returncode == 0, err
    assert out.splitlines() == ["ALERT: job broken failed: disk full"]


def restore(status_dir: Path, job_id: str, saved: bytes) -> None:
    """Put a record back exactly as it was, atomically (as a restore or a reload would)."""
    staged = status_dir.parent / f"{job_id}.json.staged"
    staged.write_bytes(saved)
    os.replace(staged, status_dir / f"{job_id}.json")


def test_removing_records_of_a_finished_batch_reports_nothing(
    status_dir: Path, store: StatusStore, cache: StatusCache
) -> None:
    calls, marker = Calls(), Calls()
    stop = on_batch_finished(cache, calls.batch)
    stop_marker = on_job_finished(cache, marker.job)
    for job_id in ("a", "b", "c"):
        store.update(job_id, batch_id="b1", status="completed")
    wait_until(lambda: calls() == [("b1", "completed")])
    saved = (status_dir / "a.json").read_bytes()
    store.delete("a")  # retention, one record at a time
    wait_until(lambda: cache.get("a") is None)
    store.delete("b")
    wait_until(lambda: cache.get("b") is None)
    restore(status_dir, "a", saved)  # and one back, unchanged
    wait_until(lambda: cache.get("a") is not None)
    store.update("z", status="completed")  # a marker: everything before it was delivered
    wait_until(lambda: ("z", "completed") in marker())
    assert calls() == [("b1", "completed")]
    stop()
    stop_marker()


def test_a_hook_may_stop_itself(store: StatusStore, cache: StatusCache) -> None:
    calls, marker = Calls(), Calls()
    stops: list[Callable[[], None]] = []

    def once(job: BatchJob) -> None:
        calls.job(job)
        stops[0]()

    stops.append(on_job_finished(cache, once))
    stop_marker = on_job_finished(cache, marker.job)
    store.update("a", status="completed")
    wait_until(lambda: len(marker()) == 1)
    store.update("b", status="completed")
    wait_until(lambda: len(marker()) == 2)
    assert calls() == [("a", "completed")]
    stop_marker()


def test_memory_of_vanished_jobs_is_bounded(
    status_dir: Path, store: StatusStore, cache: StatusCache
) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def finished(job: BatchJob, previous: BatchStatus | None) -> None:
        with lock:
            seen.append(job.id)

    saved = {}
    with TransitionTracker(cache, on_transition=finished, memory=1):
        for job_id in ("a", "b"):
            store.update(job_id, status="completed")
            wait_until(lambda j=job_id: j in seen)  # type: ignore[misc]
            saved[job_id] = (status_dir / f"{job_id}.json").read_bytes()
        for job_id in ("a", "b"):  # a is forgotten when b vanishes
            store.delete(job_id)
            wait_until(lambda j=job_id: cache.get(j) is None)  # type: ignore[misc]
        for job_id in ("a", "b"):
            restore(status_dir, job_id, saved[job_id])
            wait_until(lambda j=job_id: cache.get(j) is not None)  # type: ignore[misc]
        store.update("z", status="completed")
        wait_until(lambda: "z" in seen)
    assert seen == ["a", "b", "a", "z"]


def test_a_version_gap_compares_everything(store: StatusStore, cache: StatusCache) -> None:
    """Changes published between subscribing and the baseline arrive as a version gap.

    The gap cannot be timed from outside, so the snapshots are built here (real
    Snapshot objects) and handed to the tracker's callback the way the cache would.
    """
    seen: list[str] = []
    tracker = TransitionTracker(cache, on_transition=lambda job, _: seen.append(job.id))
    try:
        base = cache.snapshot()
        first = base.with_changes({"x": BatchJob(id="x", status=BatchStatus.COMPLETED)})
        second = first.with_changes({"y": BatchJob(id="y", status=BatchStatus.FAILED)})
        tracker._changed(second, frozenset({"y"}))  # first was never delivered
        tracker._changed(first, frozenset({"x"}))  # late and older: ignored
    finally:
        tracker.close()
    assert sorted(seen) == ["x", "y"]


def test_stopping_a_hook_never_waits_for_one_that_is_running(
    store: StatusStore, cache: StatusCache
) -> None:
    """A hook that takes the application's lock, stopped by a thread holding that lock.

    The tracker used to hold its own lock across the hook, so ``stop()`` waited for
    the hook and the hook for the caller's lock: a deadlock. The hook's acquire has
    a timeout only so that a regression fails instead of hanging the suite.
    """
    app_lock = threading.Lock()
    hook_entered = threading.Event()
    hook_got_lock: list[bool] = []

    def hook(job: BatchJob) -> None:
        hook_entered.set()
        got = app_lock.acquire(timeout=10)
        hook_got_lock.append(got)
        if got:
            app_lock.release()

    stop = on_job_finished(cache, hook)
    stopped = threading.Event()

    def tear_down() -> None:
        with app_lock:  # e.g. the application's shutdown, under its own lock
            store.update("a", status="completed")
            wait_until(hook_entered.is_set)
            stop()
        stopped.set()

    worker = threading.Thread(target=tear_down, daemon=True)
    worker.start()
    wait_until(lambda: hook_got_lock, timeout=30)
    worker.join(timeout=30)
    assert stopped.is_set()
    assert hook_got_lock == [True]


def test_a_replayed_hook_may_wait_for_the_cache_thread(
    store: StatusStore, cache: StatusCache
) -> None:
    """Replayed hooks run on the registering thread while the cache thread publishes.

    A replayed hook that waits for the cache thread (``rescan()``, or a queue's
    ``shutdown()``, which rescans) used to deadlock when a change arrived during
    the replay: the cache thread waited for the tracker's lock, held across the
    hook. The rescan runs on a helper thread joined with a timeout, so that a
    regression fails instead of hanging.
    """
    store.update("old", status="completed")
    settle(cache, store, "old")
    rescanned: list[int] = []

    def hook(job: BatchJob) -> None:
        if job.id != "old":
            return
        store.update("new", status="completed")
        # The new snapshot is swapped in: the cache thread now calls its subscribers.
        wait_until(lambda: cache.get("new") is not None)
        helper = threading.Thread(
            target=lambda: rescanned.append(cache.rescan().version), daemon=True
        )
        helper.start()
        helper.join(timeout=10)
        rescanned.append(-1 if helper.is_alive() else 0)

    calls = Calls()
    stop = on_job_finished(cache, hook, replay=True)
    stop_calls = on_job_finished(cache, calls.job)
    store.update("later", status="completed")
    wait_until(lambda: ("later", "completed") in calls())
    stop()
    stop_calls()
    assert len(rescanned) == 2 and rescanned[-1] == 0, rescanned
