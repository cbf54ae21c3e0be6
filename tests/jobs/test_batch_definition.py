"""Params a job's record could not hold are refused before anything runs.

Before the fix ``create_custom_batch`` accepted them and ``start_batch`` failed
half-way: the jobs before the oversized one ran, the batch was marked started
(so a retry was refused) and ended "failed".
"""

from __future__ import annotations

import pytest

from statusbridge import BatchManager, BatchStatus
from statusbridge.jobs import BatchDefinition
from statusbridge.record._frozen import freeze
from statusbridge.record._model import utc_now
from statusbridge.store import DEFAULT_MAX_BYTES
from statusbridge.store._shelf import open_shelf

from support.workers import double

TOO_BIG = {"blob": "x" * (DEFAULT_MAX_BYTES + 1)}


def test_create_refuses_params_a_record_cannot_hold(batch_locations: tuple[str, str]) -> None:
    with BatchManager(*batch_locations[:1], status_dir=batch_locations[1]) as manager:
        with pytest.raises(ValueError, match=r"^jobs\[1\]: .* at most 1048576 bytes"):
            manager.create_custom_batch([{"x": 1}, TOO_BIG, {"x": 3}], "big")
        assert manager.list_batches() == []
        assert len(manager.queue.store.scan()) == 0


def test_params_that_fit_run_also_when_the_batch_as_a_whole_is_larger(
    batch_locations: tuple[str, str],
) -> None:
    """The quick check (the whole definition fits one record) fails: each job is measured."""
    half = {"x": 1, "blob": "y" * (DEFAULT_MAX_BYTES // 2)}
    with BatchManager(*batch_locations[:1], status_dir=batch_locations[1]) as manager:
        batch_id = manager.create_custom_batch([half, half, {"x": 3}], "large")
        manager.start_batch(batch_id, double)
        assert manager.queue.wait(timeout=60)
        jobs = manager.get_batch_jobs(batch_id)
        assert [j.status for j in jobs] == [BatchStatus.COMPLETED] * 3


def test_start_refuses_an_oversized_definition_before_claiming_it(
    batch_locations: tuple[str, str],
) -> None:
    """A definition saved without the check (an older version, by hand) stays "created"."""
    batch_dir, status_dir = batch_locations
    batch_id = "batch-by-hand"
    definition = BatchDefinition(
        id=batch_id,
        name="by hand",
        job_ids=tuple(f"{batch_id}-{i:04d}" for i in range(3)),
        params=tuple(freeze(p) for p in ({"x": 1}, TOO_BIG, {"x": 3})),
        created_at=utc_now(),
    )
    shelf = open_shelf(batch_dir)
    try:
        shelf.put(batch_id, definition.to_json(), exclusive=True)
    finally:
        shelf.close()
    with BatchManager(batch_dir, status_dir=status_dir) as manager:
        for _ in range(2):  # refused the same way again: it was never marked started
            with pytest.raises(ValueError, match=r"^jobs\[1\]: its params make a record of"):
                manager.start_batch(batch_id, double)
        status = manager.get_batch_status(batch_id)
        assert status is not None and status.state == "created"
        assert len(manager.queue.store.scan()) == 0
