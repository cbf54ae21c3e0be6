"""A batch job starts from memory and is written as late as a queue job (issue 25 items 1-3).

A job that ends within ``record_delay`` writes only its final record; one still
waiting after it gets its PENDING record then. Until a record exists, the batch
definition names the job, so other processes can still act on it: a cancel of the
job (``statusbridge cancel JOB``) names it in the definition and creates its record
CANCELLED, a cancel of the batch sets the marker; the owner asks the definition before
each start, and in both cases the job never runs; a job running from memory stops at
its first write, and its record stays CANCELLED.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from statusbridge import BatchManager, BatchStatus, JobCancelled, report_progress
from statusbridge.jobs._batch_feed import CANCELLED_BY_BATCH

from support.waiting import wait_until
from support.workers import count_run


def identity(params: dict[str, int]) -> int:
    return params["i"]


def gate_or_count(params: dict[str, str]) -> str:
    if "gate" in params:
        wait_until(lambda: Path(params["gate"]).exists(), 60, "the gate")
        return "held"
    return count_run(params)


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
        assert [r.seq for r in records if r] == [1] * 20  # only the end
        assert all(r.started_at is not None for r in records if r)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "statusbridge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_cancel_from_another_process_while_it_runs_from_memory_stops_it(
    tmp_path: Path,
) -> None:
    started, gate, stopped = tmp_path / "started", tmp_path / "gate", tmp_path / "stopped"
    params = {"started": str(started), "gate": str(gate), "stopped": str(stopped)}
    with BatchManager(tmp_path / "b", 1, tmp_path / "s", record_delay=3.0) as manager:
        batch_id = manager.create_custom_batch([params], "cancelled while it has no record")
        manager.start_batch(batch_id, report_until_cancelled)
        (job_id,) = manager.batches[batch_id].job_ids
        wait_until(started.exists, 60, "the job to start")
        assert manager.queue.store.read(job_id) is None  # running from memory
        done = _cli("cancel", job_id, "--dir", tmp_path / "s", "--batch-dir", tmp_path / "b")
        assert done.returncode == 0, done.stderr
        assert f"cancel requested: {job_id}" in done.stdout
        gate.touch()
        # Its record is final already; the function learns at its first write.
        wait_until(stopped.exists, 60, "the job to stop")
        wait_until(lambda: manager.queue.running == 0, 60, "the job to end")
        record = manager.queue.store.read(job_id)
        assert record is not None and record.status is BatchStatus.CANCELLED
        assert record.result is None


def test_a_job_waiting_in_memory_gets_its_pending_record_after_record_delay(
    tmp_path: Path,
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    with BatchManager(tmp_path / "b", 1, tmp_path / "s", record_delay=0.3) as manager:
        batch_id = manager.create_custom_batch(
            [{"gate": str(gate)}, {"runs": str(runs), "job": "waiter"}], "one waits"
        )
        manager.start_batch(batch_id, gate_or_count)
        _blocker, waiter = manager.batches[batch_id].job_ids
        waiting = wait_until(
            lambda: manager.queue.store.read(waiter), 60, "the waiting job's PENDING record"
        )
        assert waiting.status is BatchStatus.PENDING and waiting.seq == 1
        gate.touch()
        assert manager.queue.wait(timeout=60)
        record = manager.queue.store.read(waiter)
        assert record is not None and record.status is BatchStatus.COMPLETED
        assert record.seq == 2  # PENDING, then the end
        assert len(list(runs.iterdir())) == 1


@contextmanager
def held_in_memory(tmp_path: Path, count: int) -> Iterator[tuple[BatchManager, str, list[str]]]:
    """A batch on one worker, held by its first job until ``tmp_path/gate`` exists; its
    other ``count`` jobs (``j0``...) wait in memory, each leaving a file in ``runs`` if run."""
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    jobs = [{"gate": str(gate)}] + [{"runs": str(runs), "job": f"j{i}"} for i in range(count)]
    with BatchManager(tmp_path / "b", 1, tmp_path / "s", record_delay=60.0) as manager:
        batch_id = manager.create_custom_batch(jobs, "held in memory")
        manager.start_batch(batch_id, gate_or_count)
        job_ids = list(manager.batches[batch_id].job_ids)
        wait_until(lambda: manager.queue.running == len(jobs), 60, "every job submitted")
        yield manager, batch_id, job_ids


def test_a_job_cancelled_by_id_from_another_process_never_runs_and_the_rest_do(
    tmp_path: Path,
) -> None:
    """The cancel names the job in the batch definition, which the owner asks (no read of
    the job's record) before the job leaves memory; the rest of the batch runs."""
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    with held_in_memory(tmp_path, 4) as (manager, _batch_id, job_ids):
        by_id = _cli("cancel", job_ids[2], "--dir", tmp_path / "s", "--batch-dir", tmp_path / "b")
        assert by_id.returncode == 0, by_id.stderr
        gate.touch()
        assert manager.queue.wait(timeout=60)
        assert sorted(p.name.split(".")[0] for p in runs.iterdir()) == ["j0", "j2", "j3"]
        records = [manager.queue.store.read(j) for j in job_ids]
        assert [r.status if r else None for r in records] == [
            BatchStatus.COMPLETED,
            BatchStatus.COMPLETED,
            BatchStatus.CANCELLED,
            BatchStatus.COMPLETED,
            BatchStatus.COMPLETED,
        ]
        assert records[2] is not None and records[2].message == "cancelled before it started"


def test_jobs_waiting_in_memory_never_run_after_a_cancel_from_another_process(
    tmp_path: Path,
) -> None:
    """One job cancelled by id, then the whole batch: both return before the jobs would
    start (one worker, held by the first job), and none of them runs afterwards."""
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    with held_in_memory(tmp_path, 6) as (manager, batch_id, job_ids):
        assert all(manager.queue.store.read(j) is None for j in job_ids)  # none recorded
        by_id = _cli("cancel", job_ids[1], "--dir", tmp_path / "s", "--batch-dir", tmp_path / "b")
        assert by_id.returncode == 0, by_id.stderr
        whole = _cli("cancel", "--batch", batch_id, "--dir", tmp_path / "s",
                     "--batch-dir", tmp_path / "b")  # fmt: skip
        assert whole.returncode == 0, whole.stderr
        assert "6 job(s) of batch" in whole.stdout  # not recorded yet: will not start
        gate.touch()
        assert manager.queue.wait(timeout=60)
        assert list(runs.iterdir()) == []
        records = [manager.queue.store.read(j) for j in job_ids[1:]]
        assert [r.status if r else None for r in records] == [BatchStatus.CANCELLED] * 6
        assert [r.message for r in records[1:] if r] == [CANCELLED_BY_BATCH] * 5
        first = manager.queue.store.read(job_ids[0])
        assert first is not None and first.status is BatchStatus.COMPLETED


def test_cancelling_a_finished_job_of_a_running_batch_leaves_its_definition_alone(
    tmp_path: Path,
) -> None:
    """Only a job with no record is named in the definition (and waits for the owners'
    looks); a finished one answers False at once, as any finished job."""
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    jobs = [{"gate": str(gate)}, {"runs": str(runs), "job": "quick"}]
    with BatchManager(tmp_path / "b", 2, tmp_path / "s") as manager:
        batch_id = manager.create_custom_batch(jobs, "one running")
        manager.start_batch(batch_id, gate_or_count)
        quick = manager.batches[batch_id].job_ids[1]
        wait_until(lambda: (job := manager.get_job_status(quick)) and job.is_finished, 60, "quick")
        assert manager.queue.cancel(quick) is False
        stored = (tmp_path / "b" / f"{batch_id}.json").read_text()
        assert "cancelled_jobs" not in stored
        gate.touch()
        assert manager.queue.wait(timeout=60)
