"""Aggregates kept as changes are applied equal the same aggregates computed from scratch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statusbridge import BatchJob, BatchStatus, Snapshot
from statusbridge.cache._snapshot import summarize

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

job_ids = st.sampled_from([f"j{i}" for i in range(12)])
batch_ids = st.sampled_from([None, "a", "b", "c"])
progress = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.1, 0.2, 0.3, 1 / 3, 0.5, 1.0, 5e-324]),
    st.floats(0.0, 1.0),
)


# Run times for the ETA's sums: none, whole seconds, odd microseconds, and an
# end before the start (a worker's clock may run behind).
moments = st.one_of(
    st.none(),
    st.integers(-2_000_000, 90_000_000).map(lambda us: EPOCH + timedelta(microseconds=us)),
)


@st.composite
def jobs(draw: st.DrawFn) -> BatchJob:
    status = draw(st.sampled_from(list(BatchStatus)))
    started = draw(moments) if status is not BatchStatus.PENDING else None
    finished = status not in (BatchStatus.PENDING, BatchStatus.RUNNING)
    return BatchJob(
        draw(job_ids),
        status,
        progress=draw(progress),
        batch_id=draw(batch_ids),
        created_at=EPOCH + timedelta(seconds=draw(st.integers(0, 3))),
        started_at=started,
        completed_at=draw(moments) if finished else None,
    )


# One change: some jobs set, some removed (None), each id at most once.
changes = st.lists(
    st.one_of(jobs().map(lambda j: (j.id, j)), job_ids.map(lambda i: (i, None))), max_size=5
).map(dict)


def expected_batch(snap: Snapshot, batch_id: str) -> tuple[BatchJob, ...]:
    members = [j for j in snap.values() if j.batch_id == batch_id]
    return tuple(sorted(members, key=lambda j: (j.created_at or EPOCH, j.id)))


def check(snap: Snapshot) -> None:
    # Equal summaries include the ETA's inputs: running jobs and finished run time.
    assert snap.summary() == summarize(snap.values())
    assert dict(snap.active()) == {k: j for k, j in snap.items() if not j.is_finished}
    batches = {j.batch_id for j in snap.values() if j.batch_id is not None}
    assert snap.batch_ids() == tuple(sorted(batches))
    for batch_id in ("a", "b", "c", "nope"):
        members = expected_batch(snap, batch_id)
        assert snap.batch(batch_id) == members
        assert snap.summary(batch_id) == summarize(members, batch_id=batch_id)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(changes, st.booleans()), max_size=25))
@pytest.mark.slow
def test_incremental_aggregates_equal_recomputed(
    steps: list[tuple[dict[str, BatchJob | None], bool]],
) -> None:
    snap = Snapshot()
    for change, look in steps:
        if look:  # views asked for: the next snapshot carries (and patches) them
            check(snap)
        snap = snap.with_changes(change)
    check(snap)


def test_progress_sum_leaves_no_residue() -> None:
    """Adding and removing a job many times returns exactly to the start."""
    base = Snapshot().with_changes({"x": BatchJob("x", "running", progress=0.1, batch_id="a")})  # type: ignore[arg-type]
    snap = base
    for i in range(1000):
        snap = snap.with_changes(
            {"y": BatchJob("y", "running", progress=(i % 7) / 7, batch_id="a")}  # type: ignore[arg-type]
        )
    snap = snap.with_changes({"y": None})
    assert snap.summary("a") == base.summary("a")
    assert snap.summary().progress == 0.1


def test_snapshot_built_from_parts_tallies_once() -> None:
    full = Snapshot().with_changes(
        {
            j.id: j
            for j in (
                BatchJob("a", "completed", batch_id="x"),  # type: ignore[arg-type]
                BatchJob("b", "pending", batch_id="x"),  # type: ignore[arg-type]
            )
        }
    )
    rebuilt = Snapshot(full._jobs, full._batches, full.version)  # the constructor's own path
    assert rebuilt.summary("x") == full.summary("x")
    assert rebuilt.summary().state == "running"
    assert list(rebuilt.active()) == list(full.active()) == ["b"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(jobs(), max_size=12).map(lambda js: {j.id: j for j in js}),
    st.lists(jobs(), max_size=6).map(lambda js: list({j.id: j for j in js}.values())),
    st.integers(0, 3),
)
@pytest.mark.slow
def test_summary_with_newer_records_equals_merged_summary(
    cached: dict[str, BatchJob], newer: list[BatchJob], extra: int
) -> None:
    """What a manager shows: the cache's records, its own newer ones instead, the rest pending."""
    snap = Snapshot().with_changes(cached)
    merged = {**cached, **{j.id: j for j in newer}}
    members = [j for j in merged.values() if j.batch_id == "a"]
    members += [BatchJob(f"missing-{i}", "pending", batch_id="a") for i in range(extra)]  # type: ignore[arg-type]
    assert snap.summary_with("a", newer, pending_extra=extra, name="n") == summarize(
        members, batch_id="a", name="n"
    )


@settings(max_examples=200, deadline=None)
@given(changes, changes)
@pytest.mark.slow
def test_first_load_equals_job_by_job_edits(
    first: dict[str, BatchJob | None], more: dict[str, BatchJob | None]
) -> None:
    """An empty snapshot takes a whole load in one pass; the result is the same as editing."""
    seed = BatchJob("seed", "running", batch_id="a")  # type: ignore[arg-type]  # (not one of the drawn ids)
    loaded = Snapshot().with_changes({**first, **more})
    edited = Snapshot().with_changes({"seed": seed}).with_changes({**first, **more})
    edited = edited.with_changes({"seed": None})
    assert dict(loaded) == dict(edited)
    assert loaded._total == edited._total
    assert loaded._tallies == edited._tallies
    assert loaded._running == edited._running
    assert loaded._active == edited._active
    assert loaded._batches == edited._batches
    check(loaded)


@pytest.mark.parametrize("finished", [0, 3, 7, 10])  # of 10 jobs: none, few, most, all
def test_first_load_shares_or_trims_the_whole_trie_and_equals_job_by_job_edits(
    finished: int,
) -> None:
    """A load's indexes (active, running, a batch) that hold all or most of the jobs are
    made from the jobs' own trie; later edits of either leave the other as it was."""
    load = {
        f"j{i}": BatchJob(
            f"j{i}",
            BatchStatus.COMPLETED if i < finished else BatchStatus.RUNNING,
            batch_id="a",
            created_at=EPOCH + timedelta(seconds=i),
        )
        for i in range(10)
    }
    seed = BatchJob("seed", "running", batch_id="b")  # type: ignore[arg-type]
    loaded = Snapshot().with_changes(load)
    edited = Snapshot().with_changes({"seed": seed}).with_changes(load).with_changes({"seed": None})
    for snap in (loaded, edited):
        assert dict(snap._active) == {k: j for k, j in load.items() if not j.is_finished}
    assert loaded._running == edited._running and loaded._batches == edited._batches
    assert loaded._active == edited._active and loaded._tallies == edited._tallies
    check(loaded)
    later = loaded.with_changes({"j9": load["j9"].replace(status=BatchStatus.FAILED), "j0": None})
    assert ("j9" in loaded._active) == (finished < 10) and "j0" in loaded
    assert "j9" not in later._active
    assert "j0" not in later and len(later.batch("a")) == 9 and len(loaded.batch("a")) == 10
    check(later)
