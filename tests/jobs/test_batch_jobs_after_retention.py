"""get_batch_jobs of a finished batch bigger than ``max_completed_jobs`` (issue 26 item 13).

Retention removes the oldest finished records once the batch's final counts are
saved; the jobs it removed are left out of ``get_batch_jobs``, never shown as
PENDING, and the summary still counts all of them.
"""

from __future__ import annotations

from pathlib import Path

from statusbridge import BatchManager, BatchStatus

from support.waiting import wait_until


def double(params: dict[str, int]) -> int:
    return params["x"] * 2


def test_trimmed_jobs_of_a_finished_batch_are_never_shown_unfinished(tmp_path: Path) -> None:
    with BatchManager(
        tmp_path / "batches", 2, tmp_path / "status", max_completed_jobs=5
    ) as manager:
        batch_id = manager.create_custom_batch([{"x": i} for i in range(12)], "trimmed")
        manager.start_batch(batch_id, double)
        assert manager.queue.wait(timeout=60)
        wait_until(
            lambda: len(manager.queue.snapshot().batch(batch_id)) <= 5,
            30,
            "retention to trim the batch",
        )
        jobs = manager.get_batch_jobs(batch_id)
        assert 0 < len(jobs) <= 5
        assert all(j.status is BatchStatus.COMPLETED for j in jobs), jobs
        assert [j.result for j in jobs] == [int(j.id[-4:]) * 2 for j in jobs]
        status = manager.get_batch_status(batch_id)
        assert status is not None and status.counts[BatchStatus.COMPLETED] == 12
