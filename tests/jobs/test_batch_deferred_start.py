"""A batch job's RUNNING record is deferred like a queue job's (issue 25 item 2).

A job that ends within ``record_delay`` writes only its final record over the
PENDING one the batch feed wrote; a cancel that reaches its record while it runs
unwritten (the record still says PENDING) stops it at its first write, and the
record stays CANCELLED.
"""

from __future__ import annotations

import time
from pathlib import Path

from statusbridge import BatchManager, BatchStatus, JobCancelled, report_progress
from statusbridge.jobs._cancel import request_cancel
from statusbridge.store import StatusStore

from support.waiting import wait_until


def identity(params: dict[str, int]) -> int:
    return params["i"]


def report_until_cancelled(params: dict[str, str]) -> str:
    Path(params["started"]).touch()
    wait_until(lambda: Path(params["gate"]).exists(), 60, "the gate")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            report_progress(0.5)
            time.sleep(0.01)  # a job's own work between reports
    except JobCancelled:
        Path(params["stopped"]).touch()
        raise
    return "never cancelled"


def test_a_short_batch_job_writes_its_end_only(tmp_path: Path) -> None:
    with BatchManager(tmp_path / "b", 2, tmp_path / "s") as manager:
        batch_id = manager.create_custom_batch([{"i": i} for i in range(20)], "short")
        manager.start_batch(batch_id, identity)
        assert manager.queue.wait(timeout=60)
        records = [manager.queue.store.read(j) for j in manager.batches[batch_id].job_ids]
        assert [r.status for r in records if r] == [BatchStatus.COMPLETED] * 20
        assert [r.seq for r in records if r] == [2] * 20  # PENDING, then the end
        assert all(r.started_at is not None for r in records if r)


def test_a_cancel_while_it_runs_unwritten_stops_it_at_its_first_write(tmp_path: Path) -> None:
    started, gate, stopped = tmp_path / "started", tmp_path / "gate", tmp_path / "stopped"
    params = {"started": str(started), "gate": str(gate), "stopped": str(stopped)}
    with BatchManager(tmp_path / "b", 1, tmp_path / "s", record_delay=3.0) as manager:
        batch_id = manager.create_custom_batch([params], "cancelled while it looks pending")
        manager.start_batch(batch_id, report_until_cancelled)
        (job_id,) = manager.batches[batch_id].job_ids
        wait_until(started.exists, 60, "the job to start")
        other = StatusStore(tmp_path / "s")  # as another process would
        try:
            before = other.read(job_id)
            assert before is not None and before.status is BatchStatus.PENDING
            assert request_cancel(other, job_id) is True
        finally:
            other.close()
        gate.touch()
        # Its record is final already; the function learns at its first write.
        wait_until(stopped.exists, 60, "the job to stop")
        wait_until(lambda: manager.queue.running == 0, 60, "the job to end")
        record = manager.queue.store.read(job_id)
        assert record is not None and record.status is BatchStatus.CANCELLED
        assert record.result is None
