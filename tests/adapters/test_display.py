"""What the desktop views show, toolkit-free: elapsed time, ETA, durations (no display needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from statusbridge import BatchJob, BatchStatus
from statusbridge.display import (
    STATUS_COLOURS,
    elapsed_seconds,
    eta_seconds,
    format_duration,
    state_label,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def job(
    status: BatchStatus, progress: float | None, started_ago: float | None, **kw: object
) -> BatchJob:
    started = None if started_ago is None else NOW - timedelta(seconds=started_ago)
    return BatchJob(id="j", status=status, progress=progress, started_at=started, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("progress", "started_ago", "expected"),
    [
        (0.25, 30.0, 90.0),  # a quarter in 30 s: three quarters take 90 s more
        (0.5, 10.0, 10.0),
        (0.9, 90.0, 10.0),
        (1.0, 50.0, 0.0),  # done, not yet marked completed
        (0.0, 10.0, None),  # no progress yet: no basis
        (None, 10.0, None),  # progress unknown
        (0.5, None, None),  # never started
    ],
)
def test_eta_is_elapsed_times_remaining_over_done(
    progress: float | None, started_ago: float | None, expected: float | None
) -> None:
    eta = eta_seconds(job(BatchStatus.RUNNING, progress, started_ago), NOW)
    assert eta == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "status",
    [BatchStatus.PENDING, BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED],
)
def test_eta_only_for_running_jobs(status: BatchStatus) -> None:
    assert eta_seconds(job(status, 0.5, 10.0, completed_at=NOW), NOW) is None


def test_eta_depends_only_on_the_injected_now() -> None:
    running = job(BatchStatus.RUNNING, 0.5, 10.0)
    assert eta_seconds(running, NOW) == pytest.approx(10.0)
    assert eta_seconds(running, NOW + timedelta(seconds=10)) == pytest.approx(20.0)


def test_elapsed_stops_at_completion_and_is_never_negative() -> None:
    done = job(BatchStatus.COMPLETED, 1.0, 60.0, completed_at=NOW - timedelta(seconds=20))
    assert elapsed_seconds(done, NOW + timedelta(hours=1)) == pytest.approx(40.0)
    assert elapsed_seconds(job(BatchStatus.PENDING, None, None), NOW) is None
    ahead = job(BatchStatus.RUNNING, 0.5, -5.0)  # the worker's clock runs ahead of ours
    assert elapsed_seconds(ahead, NOW) == 0.0
    assert eta_seconds(ahead, NOW) == 0.0


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, -3, 0, 9.4, 60, 3599, 3600, 90061)] == [
        "",
        "0s",
        "0s",
        "9s",
        "1m 00s",
        "59m 59s",
        "1h 00m",
        "25h 01m",
    ]


def test_state_label_and_colours() -> None:
    assert state_label(job(BatchStatus.RUNNING, 0.5, 1.0)) == "running"
    assert state_label(job(BatchStatus.RUNNING, 0.5, 1.0, cancel_requested=True)) == "cancelling"
    assert set(STATUS_COLOURS) == set(BatchStatus)
    assert all(c.startswith("#") and len(c) == 7 for c in STATUS_COLOURS.values())


def test_a_reported_percentage_is_shown_as_reported() -> None:
    """Rounded down, but not below what was reported: 0.29 * 100 is 28.999999999999996 in
    floating point, and a job that reported 29% was shown as 28% (57% as 56%)."""
    from statusbridge.cache._snapshot import summarize
    from statusbridge.cli._render import bar
    from statusbridge.display import floor_share, percent

    for k in range(101):
        assert percent(k / 100) == f"{k}%"
    assert floor_share(0.3, 10) == 3
    assert bar(0.29).endswith(" 29%")
    assert floor_share(1 - 1e-12, 100) == 99  # full only once the work is complete
    assert "29%" in str(summarize([BatchJob("a", BatchStatus.RUNNING, progress=0.29)]))
