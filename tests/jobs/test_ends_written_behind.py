"""Thread jobs hand their ends to their queue, which writes them (``Outcome``).

A worker takes its next job instead of waiting for a write; the queue's supervisor
writes the ends of all the jobs that ended meanwhile at once (one transaction on
SQLite). Real threads, a real database; waits are conditions with timeouts.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchJob, BatchQueue, BatchStatus, StatusStore
from statusbridge.jobs._submissions import Submission

from support.waiting import wait_until

Change = Callable[[BatchJob | None], dict[str, Any] | None]


def _ended(submission: Submission | None) -> bool:
    return submission is not None and submission.future is not None and submission.future.done()


def test_jobs_that_end_together_are_written_together(tmp_path: Path) -> None:
    """While the queue's first write waits for the database, the other jobs end; their
    ends are then written in one go, and no worker thread writes anything."""
    url = f"sqlite:///{tmp_path}/status.db"
    with BatchQueue(4, status_dir=url) as queue:
        store = queue.store
        sizes: list[int] = []
        writers: set[str] = set()
        real_many, real_modify = store.modify_many, store.modify

        def modify_many(changes: Sequence[tuple[str, Change]]) -> list[Any]:
            sizes.append(len(changes))
            writers.add(threading.current_thread().name)
            return real_many(changes)

        def modify(job_id: str, change: Change) -> BatchJob | None:
            writers.add(threading.current_thread().name)
            return real_modify(job_id, change)

        store.modify_many = modify_many  # type: ignore[method-assign]
        store.modify = modify  # type: ignore[method-assign]
        submissions = queue._submissions
        held: threading.Lock = store._db.lock  # type: ignore[attr-defined]
        with held:
            ids = [queue.submit(lambda p: p["i"] * 2, {"i": i}) for i in range(20)]
            # The first write waits for the lock while every other job ends.
            wait_until(
                lambda: sizes and all(_ended(submissions.get(i)) for i in ids),
                5,
                "every job ended",
            )
        assert queue.wait(ids, timeout=30)
        # Those that ended behind the first write go in one more (a worker descheduled
        # between its future's end and posting it makes the queue write once more).
        assert sum(sizes) == 20 and len(sizes) <= 4, sizes
        assert writers == {"statusbridge-queue"}
        for i, job_id in enumerate(ids):
            job = store.read(job_id)
            assert job is not None and job.status is BatchStatus.COMPLETED
            assert job.result == i * 2 and job.seq == 1


@pytest.mark.parametrize("backend", ["folder", "sqlite"])
def test_an_end_that_cannot_be_stored_fails_the_job_and_the_others_land(
    tmp_path: Path, backend: str
) -> None:
    """One job's result JSON cannot hold, in the same write as others' ends: that job is
    FAILED saying why, and the others are COMPLETED."""
    where = f"sqlite:///{tmp_path}/status.db" if backend == "sqlite" else str(tmp_path)
    gate = threading.Event()

    def job(p: dict[str, Any]) -> object:
        gate.wait(30)
        return object() if p["i"] == 2 else p["i"]

    with BatchQueue(4, status_dir=where) as queue:
        ids = [queue.submit(job, {"i": i}) for i in range(4)]
        gate.set()
        assert queue.wait(ids, timeout=30)
        for i, job_id in enumerate(ids):
            record = queue.store.read(job_id)
            assert record is not None
            if i == 2:
                assert record.status is BatchStatus.FAILED
                assert "cannot be stored" in (record.error_message or "")
            else:
                assert record.status is BatchStatus.COMPLETED and record.result == i


def test_a_queue_dropped_as_its_jobs_end_still_writes_their_ends(tmp_path: Path) -> None:
    """No shutdown(): the queue lives on while it has jobs, and lets go of its store only
    once it has written every job's end."""
    url = f"sqlite:///{tmp_path}/status.db"
    queue = BatchQueue(2, status_dir=url)
    ids = [queue.submit(lambda p: p["i"], {"i": i}) for i in range(50)]
    supervisor = queue._life.thread
    del queue
    gc.collect()
    supervisor.join(30)
    assert not supervisor.is_alive()
    with StatusStore(url) as store:
        jobs = [store.read(job_id) for job_id in ids]
    assert all(job is not None and job.status is BatchStatus.COMPLETED for job in jobs)


EXITS_WITHOUT_SHUTDOWN = """
import sys, time
from statusbridge import BatchQueue

def work(params):
    time.sleep(0.3)  # the job's work: it still runs when the script ends
    return "done"

queue = BatchQueue(4, status_dir=sys.argv[1], record_delay=float(sys.argv[2]))
ids = [queue.submit(work) for _ in range(4)]
if sys.argv[3] == "stop":
    queue.shutdown(wait=False)
print(",".join(ids), flush=True)
"""


@pytest.mark.parametrize(("record_delay", "ending"), [(0.0, "end"), (1.0, "end"), (1.0, "stop")])
def test_a_script_that_ends_without_waiting_still_writes_every_end(
    tmp_path: Path, record_delay: float, ending: str
) -> None:
    """The script ends with its jobs running (no shutdown, or shutdown(wait=False)): the
    interpreter waits for the pool's threads, then the queue writes the ends before it
    lets go of its store."""
    script = tmp_path / "script.py"
    script.write_text(EXITS_WITHOUT_SHUTDOWN)
    folder = tmp_path / "status"
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(record_delay), ending],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids = run.stdout.strip().split(",")
    with StatusStore(folder) as store:
        jobs = [store.read(job_id) for job_id in ids]
    assert len(ids) == 4
    assert all(j is not None and j.status is BatchStatus.COMPLETED for j in jobs), jobs
