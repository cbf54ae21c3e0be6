"""ETA of a job and of a batch, computed against an injected clock (no sleeping, no real time)."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statusbridge import BatchJob, BatchStatus, StatusCache, StatusStore
from statusbridge.cache._snapshot import summarize
from statusbridge.display import batch_eta_seconds, eta_seconds
from statusbridge.record._eta import _makespan
from statusbridge.record._model import utc_now

from support.waiting import wait_until

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def running(job_id: str, started_ago: float, progress: float | None) -> BatchJob:
    return BatchJob(
        id=job_id, status=BatchStatus.RUNNING, started_at=ago(started_ago), progress=progress
    )


def finished(job_id: str, took: float, status: BatchStatus = BatchStatus.COMPLETED) -> BatchJob:
    return BatchJob(
        id=job_id, status=status, started_at=ago(1000 + took), completed_at=ago(1000), progress=1.0
    )


def pending(job_id: str) -> BatchJob:
    return BatchJob(id=job_id)


def test_job_eta_extrapolates_progress_over_elapsed() -> None:
    job = running("a", 30, 0.25)
    assert job.eta(now=NOW) == pytest.approx(90.0)
    assert job.eta(now=NOW + timedelta(seconds=30)) == pytest.approx(180.0)  # stalled: grows
    assert eta_seconds(job, NOW) == job.eta(now=NOW)  # the display helper is the same estimate


@pytest.mark.parametrize(
    "job",
    [
        running("a", 30, None),  # never reported progress: no ETA
        running("a", 30, 0.0),
        BatchJob(id="a", status=BatchStatus.RUNNING, progress=0.5),  # no start time
        pending("a"),
        finished("a", 10),
    ],
)
def test_job_without_basis_or_not_running_has_no_eta(job: BatchJob) -> None:
    assert job.eta(now=NOW) is None


def test_job_eta_property_uses_the_current_time() -> None:
    job = BatchJob(
        id="a",
        status=BatchStatus.RUNNING,
        progress=0.5,
        started_at=utc_now() - timedelta(seconds=100),
    )
    eta = job.eta_seconds
    assert eta is not None
    assert eta >= 100.0  # elapsed only grows after the start we set


def test_batch_eta_is_the_slowest_running_job_when_nothing_waits() -> None:
    summary = summarize([running("a", 10, 0.5), running("b", 30, 0.75), finished("c", 5)])
    # a: 10 s left; b: 10 s left
    assert summary.eta(now=NOW) == pytest.approx(10.0)
    assert batch_eta_seconds(summary, NOW) == summary.eta(now=NOW)


def test_batch_eta_runs_pending_jobs_at_the_current_concurrency_with_the_mean_duration() -> None:
    jobs = [
        finished("f1", 10),
        finished("f2", 30, BatchStatus.FAILED),  # failed jobs took a slot as long, too
        running("r1", 10, 0.5),  # 10 s left
        running("r2", 15, 0.75),  # 5 s left
        *(pending(f"p{i}") for i in range(3)),
    ]
    summary = summarize(jobs)
    assert summary.mean_duration == pytest.approx(20.0)
    # Two slots, free at 5 and 10; three jobs of 20 s start at 5, 10, 25 -> last ends at 45.
    assert summary.eta(now=NOW) == pytest.approx(45.0)


def test_batch_eta_uses_the_mean_for_running_jobs_without_progress() -> None:
    summary = summarize([finished("f", 60), running("r", 20, None), pending("p")])
    # r: 60 - 20 = 40 s left; then p, 60 s, on the only slot -> 100.
    assert summary.eta(now=NOW) == pytest.approx(100.0)
    late = summarize([finished("f", 60), running("r", 90, None)])
    assert late.eta(now=NOW) == 0.0  # overdue: never negative


def test_batch_eta_without_finished_jobs_projects_the_running_jobs() -> None:
    summary = summarize([running("a", 10, 0.5), pending("p1"), pending("p2")])
    # a will take 20 s in all: that is the guess for p1, p2, run one after the other.
    assert summary.eta(now=NOW) == pytest.approx(10.0 + 20.0 + 20.0)
    # b reports no progress: it is guessed to take as long as a (20 s in all).
    quiet = summarize([running("a", 10, 0.5), running("b", 5, None)])
    assert quiet.eta(now=NOW) == pytest.approx(15.0)


@pytest.mark.parametrize(
    "jobs",
    [
        [],  # empty batch
        [pending("p")],  # nothing started
        [running("a", 10, None), pending("p")],  # no progress reports, nothing finished
    ],
)
def test_batch_without_basis_has_no_eta(jobs: list[BatchJob]) -> None:
    assert summarize(jobs).eta(now=NOW) is None


def test_finished_batch_has_nothing_left() -> None:
    assert summarize([finished("a", 5), finished("b", 7)]).eta(now=NOW) == 0.0


def test_many_pending_jobs_are_estimated_without_walking_them() -> None:
    jobs = [finished("f", 10), running("r1", 5, 0.5), running("r2", 5, 0.5)]
    summary = summarize([*jobs, *(pending(f"p{i}") for i in range(10_001))])
    # Both slots free at 5 s; 10,001 jobs of 10 s: 5,001 rounds on one slot.
    assert summary.eta(now=NOW) == pytest.approx(5.0 + 5001 * 10.0)


def test_snapshot_summaries_carry_the_eta(tmp_path: Path) -> None:
    folder = str(tmp_path)
    with StatusStore(folder) as store, StatusCache(folder) as cache:
        start = utc_now()
        store.update("a", batch_id="b1", status="running", started_at=start, progress=0.5)
        store.update("c", batch_id="b1")
        wait_until(lambda: len(cache.snapshot().batch("b1")) == 2)
        summary = cache.snapshot().summary("b1")
        later = start + timedelta(seconds=10)
        # a: 10 s elapsed at half -> 10 s left; c: 20 s after that on the same slot.
        assert summary.eta(now=later) == pytest.approx(30.0)
        assert cache.snapshot().summary().eta(now=later) == pytest.approx(30.0)


@settings(max_examples=300, deadline=None)
@given(
    free=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=8),
    jobs=st.integers(0, 60),
    duration=st.floats(0.01, 500, allow_nan=False),
)
@pytest.mark.slow
def test_makespan_equals_greedy_scheduling_job_by_job(
    free: list[float], jobs: int, duration: float
) -> None:
    """The O(slots) shortcut against the plain simulation: each job to the slot free first."""
    slots = sorted(free)
    heap = list(slots)
    heapq.heapify(heap)
    end = max(slots)
    for _ in range(jobs):
        start = heapq.heappop(heap)
        end = max(end, start + duration)
        heapq.heappush(heap, start + duration)
    assert _makespan(slots, jobs, duration) == pytest.approx(end, rel=1e-9, abs=1e-6)
