"""Retention's quick path (oldest first, from the finish order) picks what the full sort picks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statusbridge import BatchJob, BatchStatus, Snapshot
from statusbridge.jobs._liveness import LocalClock
from statusbridge.jobs._retention import FinishOrder, select_for_retention

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
    expected = select_for_retention(
        snap.values(),
        max_completed=max_completed,
        max_age_hours=max_age_hours,
        now=now,
        ranks=order.ranks(),
        protected_batches=protected,
        ages=order.ages(now),
    )
    quick = order.select(
        snap,
        max_completed=max_completed,
        max_age_hours=max_age_hours,
        now=now,
        protected=lambda j: j.batch_id is not None and j.batch_id in protected,
    )
    assert sorted(j.id for j in quick) == sorted(j.id for j in expected)
