"""Retention's quick path (oldest first, from the finish order) picks what the full sort picks.

The reference sorts every record newest first (finish order, then finish time) and
asks the same ``RetentionPolicy`` that ``StatusStore.cleanup`` asks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statusbridge import BatchJob, BatchStatus, Snapshot
from statusbridge.jobs._liveness import LocalClock
from statusbridge.jobs._retention import FinishOrder
from statusbridge.store._retention import RetentionPolicy, finished_at

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ids = [f"j{i}" for i in range(15)]


@st.composite
def job(draw: st.DrawFn, job_id: str | None = None) -> BatchJob:
    status = draw(st.sampled_from(list(BatchStatus)))
    when = EPOCH + timedelta(seconds=draw(st.integers(0, 5)))
    return BatchJob(
        job_id or draw(st.sampled_from(ids)),
        status,
        batch_id=draw(st.sampled_from([None, "a", "b"])),
        created_at=EPOCH,
        completed_at=when if status in (BatchStatus.COMPLETED, BatchStatus.FAILED) else None,
        updated_at=when,
    )


changes = st.lists(
    st.one_of(job().map(lambda j: (j.id, j)), st.sampled_from(ids).map(lambda i: (i, None))),
    max_size=4,
).map(dict)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.lists(job(), max_size=10).map(lambda js: {j.id: j for j in js}),
    steps=st.lists(changes, max_size=12),
    max_completed=st.integers(0, 10),
    protected=st.sets(st.sampled_from(["a", "b"])),
    seed_at=st.integers(0, 4),
    max_age_seconds=st.one_of(st.none(), st.integers(0, 6)),
)
@pytest.mark.slow
def test_quick_selection_equals_full_selection(
    *,
    initial: dict[str, BatchJob],
    steps: list[dict[str, BatchJob | None]],
    max_completed: int,
    protected: set[str],
    seed_at: int,
    max_age_seconds: int | None,
) -> None:
    order = FinishOrder(LocalClock(monotonic=lambda: 0.0))  # every job seen finishing at 0
    snap = Snapshot().with_changes(initial)
    for i, change in enumerate(steps):
        if i == seed_at:
            # Jobs finished before the queue started; the subscription may already
            # have numbered a few that finished meanwhile.
            order.seed(snap)
        snap = snap.with_changes(change)
        order(snap, change.keys())  # what the cache's subscription does
    if seed_at >= len(steps):
        order.seed(snap)
    now = EPOCH + timedelta(seconds=5)
    max_age_hours = None if max_age_seconds is None else max_age_seconds / 3600
    policy = RetentionPolicy(max_completed, max_age_hours)
    ranks = order.ranks()

    def newest_first(j: BatchJob) -> tuple[int, float, str]:
        when = finished_at(j)
        return (ranks.get(j.id, 0), when.timestamp() if when else 0.0, j.id)

    def is_protected(j: BatchJob) -> bool:
        return j.batch_id is not None and j.batch_id in protected

    everything = sorted(snap.values(), key=newest_first, reverse=True)
    expected = policy.select(everything, now=now, protected=is_protected, ages=order.ages(now))
    quick = order.select(snap, policy, now=now, protected=is_protected)
    assert sorted(j.id for j in quick) == sorted(j.id for j in expected)
