"""Jobs whose status lives on a Redis server: queue, manager, and jobs on Dask workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from statusbridge import BatchManager, BatchQueue, BatchStatus, StatusStore

from support.waiting import wait_until
from support.workers import double, until_cancelled, wait_for_gate


def all_finished(queue: BatchQueue, ids: tuple[str, ...]) -> bool:
    return all((j := queue.get_job_status(i)) is not None and j.is_finished for i in ids)


def test_queue_on_a_url_runs_threads_and_processes(redis_url: str) -> None:
    for executor in ("thread", "process"):
        with BatchQueue(status_dir=redis_url, executor=executor) as queue:
            ok = queue.submit(double, {"x": 21})
            bad = queue.submit(double, {"x": 1, "fail": True})
            wait_until(lambda q=queue, ids=(ok, bad): all_finished(q, ids), 60, "both jobs")  # type: ignore[misc]
            done = queue.get_job_status(ok)
            assert done is not None and done.status is BatchStatus.COMPLETED
            assert done.result == {"value": 42} and done.meta.get("pid") is None
            failed = queue.get_job_status(bad)
            assert failed is not None and failed.status is BatchStatus.FAILED
            assert "boom" in (failed.error_message or "")
            assert StatusStore(redis_url).read(ok) == done


def test_cancel_reaches_a_process_job_through_the_url(redis_url: str) -> None:
    with BatchQueue(status_dir=redis_url, executor="process") as queue:
        job_id = queue.submit(until_cancelled, {})
        wait_until(lambda: (j := queue.get_job_status(job_id)) and j.progress, 60, "running")
        assert queue.cancel(job_id)
        job = wait_until(
            lambda: (j := queue.get_job_status(job_id)) and j.is_finished and j, 30, "the cancel"
        )
        assert job.status is BatchStatus.CANCELLED
        assert job.meta["cancelled_inside"] is True


def test_manager_keeps_batches_on_the_server(redis_url: str) -> None:
    manager = BatchManager(status_dir=redis_url)
    try:
        batch_id = manager.create_custom_batch([{"x": 1}, {"x": 2}], "On Redis")
        manager.start_batch(batch_id, double)
        wait_until(lambda: (s := manager.get_batch_status(batch_id)) and s.is_done, 60, "batch")
        summary = manager.get_batch_status(batch_id)
        assert summary is not None and summary.counts[BatchStatus.COMPLETED] == 2
        assert summary.name == "On Redis"
    finally:
        manager.queue.shutdown()
    # Another manager (a fresh engine: other options) finds the batch on the server.
    other = BatchManager(status_dir=redis_url, max_concurrent=3)
    try:
        assert batch_id in [b.id for b in other.list_batches()]
    finally:
        other.queue.shutdown()


# In a child process of its own, with a fresh working directory: this process' cwd is
# shared with other tests' threads, which may still write to a relative folder of theirs.
NOTHING_IN_CWD = """
import os, sys
from statusbridge import BatchManager, BatchQueue, StatusCache
sys.path.insert(0, sys.argv[2])
from support.workers import double
url = sys.argv[1]
with BatchQueue(status_dir=url, executor="process") as queue:
    queue.wait([queue.submit(double, {"x": 1})], timeout=60)
manager = BatchManager(status_dir=url)
batch = manager.create_custom_batch([{"x": 2}], "cwd")
manager.start_batch(batch, double)
manager.shutdown(wait=True)
StatusCache(url).close()
print(sorted(os.listdir(".")))
"""


def test_nothing_is_created_in_the_working_directory(redis_url: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", NOTHING_IN_CWD, redis_url, str(Path(__file__).parents[1])],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "[]"
    assert os.listdir(tmp_path) == []


def test_manager_with_a_url_and_a_batch_folder(redis_url: str, tmp_path: Path) -> None:
    manager = BatchManager(batch_dir=tmp_path / "defs", status_dir=redis_url)
    try:
        batch_id = manager.create_custom_batch([{"gate": str(tmp_path / "gate")}], "Split")
        assert (tmp_path / "defs" / f"{batch_id}.json").is_file()
        manager.start_batch(batch_id, wait_for_gate)
        wait_until(lambda: (s := manager.get_batch_status(batch_id)) and s.progress > 0, 30)
        (tmp_path / "gate").touch()
        wait_until(lambda: (s := manager.get_batch_status(batch_id)) and s.is_done, 30, "done")
    finally:
        manager.queue.shutdown()
