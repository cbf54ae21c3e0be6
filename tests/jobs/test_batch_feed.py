"""start_batch returns once the definition says "started"; the jobs are fed in the background.

What others can do with such a batch at once: see its total, cancel it (from
another process: no job starts after the cancel returns), cancel one job not
recorded yet. Timings are in ``bench/batch_start.py``, not here.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchJob, BatchManager, BatchStatus, BatchSummary
from statusbridge.record._model import utc_now
from statusbridge.store import StatusStore

from support.batch_workers import start_big_batch
from support.waiting import wait_until
from support.workers import count_run

JOBS = 2_000


def identity(params: dict[str, int]) -> int:
    return params["i"]


def wait_for_gate(params: dict[str, str]) -> str:
    gate = threading.Event()
    wait_until(lambda: Path(params["gate"]).exists(), 60, "the gate")
    gate.set()
    return "through"


def finished(manager: BatchManager, batch_id: str, *, timeout: float) -> BatchSummary:
    """The batch's summary once its jobs are done and the summary says so."""
    assert manager.queue.wait(timeout=timeout)
    wait_until(
        lambda: manager.get_batch_status(batch_id).is_done,  # type: ignore[union-attr]
        60,
        "the batch to finish",
    )
    done = manager.get_batch_status(batch_id)
    assert done is not None
    return done


@pytest.fixture
def folders(batch_locations: tuple[str, str]) -> tuple[str, str]:
    return batch_locations


@pytest.mark.timeout(300)
def test_total_at_once_and_every_job_runs_once(folders: tuple[str, str]) -> None:
    with BatchManager(folders[0], 4, folders[1], max_completed_jobs=10 * JOBS) as manager:
        batch_id = manager.create_custom_batch([{"i": i} for i in range(JOBS)], "many")
        manager.start_batch(batch_id, identity)
        status = manager.get_batch_status(batch_id)
        assert status is not None and status.total == JOBS
        assert sum(status.counts.values()) == JOBS
        done = finished(manager, batch_id, timeout=240)
        assert done.counts[BatchStatus.COMPLETED] == JOBS
        jobs = manager.get_batch_jobs(batch_id)
        assert [j.result for j in jobs] == list(range(JOBS))
        assert all(j.seq <= 3 for j in jobs)  # pending, running, final: never run twice


@pytest.mark.timeout(120)
def test_a_chunk_whose_write_failed_halfway_runs_every_job_once(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    """``create_absent`` writes half of a chunk, then fails (as a store without transactions
    can): the feed tries again, and the records written by the failed call are its own.

    The failure is simulated (an OSError(ENOSPC) from the store at that one moment); the
    threads, the feed and the records are real. ``record_delay=0``: the feed writes each
    chunk's records before its jobs start (as on process workers), not from memory.
    """
    runs = tmp_path / "runs"
    runs.mkdir()
    jobs = 300
    with BatchManager(
        folders[0], 2, folders[1], max_completed_jobs=10 * jobs, record_delay=0
    ) as manager:
        store = manager.queue.store
        real_create_absent = store.create_absent
        failed: list[int] = []

        def half_then_fail(records: Mapping[str, Mapping[str, Any]]) -> list[BatchJob]:
            if failed:
                return real_create_absent(records)
            failed.append(len(records))
            real_create_absent(dict(list(records.items())[: len(records) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

        store.create_absent = half_then_fail  # type: ignore[method-assign]
        params = [{"runs": str(runs), "job": str(i)} for i in range(jobs)]
        batch_id = manager.create_custom_batch(params, "halfway")
        manager.start_batch(batch_id, count_run)
        done = finished(manager, batch_id, timeout=90)
    assert failed  # the simulated failure happened
    assert done.counts[BatchStatus.COMPLETED] == jobs
    ran = sorted(int(name.split(".")[0]) for name in os.listdir(runs))
    assert ran == list(range(jobs))  # each once


@pytest.mark.timeout(120)
def test_cancelling_a_job_not_recorded_yet_creates_it_cancelled(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with BatchManager(folders[0], 1, folders[1], max_completed_jobs=10 * JOBS) as manager:
        batch_id = manager.create_custom_batch([{"gate": str(gate)}] * JOBS, "gated")
        manager.start_batch(batch_id, wait_for_gate)
        last = manager.batches[batch_id].job_ids[-1]
        assert manager.queue.cancel(last) is True
        record = manager.queue.store.read(last)
        assert record is not None and record.status is BatchStatus.CANCELLED
        assert record.batch_id == batch_id
        gate.touch()
        done = finished(manager, batch_id, timeout=100)
        assert done.counts[BatchStatus.CANCELLED] == 1
        assert done.counts[BatchStatus.COMPLETED] == JOBS - 1


@pytest.mark.timeout(300)
def test_cancel_from_another_process_during_a_big_start_starts_no_job_after_it(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    """The starter runs in a child process; this process cancels while it still feeds."""
    batch_dir, status_dir = folders
    runs, out = tmp_path / "runs", tmp_path / "batch-id"
    runs.mkdir()
    jobs = 3_000
    child = mp.get_context("spawn").Process(
        target=start_big_batch, args=(batch_dir, status_dir, str(runs), jobs, str(out))
    )
    child.start()
    try:
        with BatchManager(batch_dir, 1, status_dir, max_completed_jobs=10 * jobs) as manager:
            wait_until(out.exists, 120, "the other process to start its batch")
            batch_id = out.read_text()
            wait_until(lambda: any(runs.iterdir()), 120, "a job of the batch to run")
            manager.cancel_batch(batch_id)
            cancel_returned = utc_now()
            child.join(240)
            assert child.exitcode == 0
            store = StatusStore(status_dir)
            try:
                records = [store.read(job_id) for job_id in manager.batches[batch_id].job_ids]
            finally:
                store.close()
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
    started_after = [
        r.id
        for r in records
        if r is not None and r.started_at is not None and r.started_at > cancel_returned
    ]
    assert started_after == []
    unfinished = [
        (i, r and r.status) for i, r in enumerate(records) if r is None or not r.is_finished
    ]
    assert unfinished == []
    ran = len(list(runs.iterdir()))
    assert 0 < ran < jobs
    statuses = {r.status for r in records if r is not None}
    assert statuses <= {BatchStatus.COMPLETED, BatchStatus.CANCELLED}
