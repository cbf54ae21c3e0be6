"""Deferred records: a thread job's states may live in memory for ``record_delay``.

Every check reads the real files (a record's ``seq`` counts the writes it took)
and runs real threads; waits are conditions with timeouts.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from statusbridge import (
    BatchJob,
    BatchQueue,
    BatchStatus,
    StatusCache,
    StatusStore,
    report_progress,
)
from statusbridge.errors import JobCancelled
from statusbridge.jobs._context import JobContext
from statusbridge.jobs._liveness import this_process

from support.waiting import wait_until
from support.workers import deferred_queue_then_die


def gated() -> tuple[Callable[[Any], str], threading.Event, threading.Event]:
    """A job that says it started, then waits for the gate (30 s at most)."""
    started, gate = threading.Event(), threading.Event()

    def job(params: Any) -> str:
        started.set()
        if not gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return "through"

    return job, started, gate


def test_a_short_job_takes_one_write_and_its_record_is_whole(tmp_path: Path) -> None:
    with BatchQueue(2, status_dir=tmp_path, record_delay=60) as queue:
        job_id = queue.submit(lambda params: params["x"] * 2, {"x": 21})
        assert queue.wait([job_id], timeout=30)
    job = StatusStore(tmp_path).read(job_id)
    assert job is not None
    assert job.seq == 1  # created by its final write: no PENDING, no RUNNING write
    assert job.status is BatchStatus.COMPLETED and job.result == 42
    assert job.params == {"x": 21} and job.batch_id is None and job.progress == 1.0
    assert job.owner == this_process().owner
    assert job.created_at is not None and job.started_at is not None
    assert job.completed_at is not None
    assert job.created_at <= job.started_at <= job.completed_at


def test_memory_only_jobs_are_seen_by_their_own_queue(tmp_path: Path) -> None:
    blocked, started, gate = gated()
    store = StatusStore(tmp_path)
    with BatchQueue(1, status_dir=tmp_path, record_delay=60) as queue:
        running_id = queue.submit(blocked)
        waiting_id = queue.submit(lambda params: "second")
        assert started.wait(30)
        running, waiting = queue.get_job_status(running_id), queue.get_job_status(waiting_id)
        assert running is not None and running.status is BatchStatus.RUNNING
        assert waiting is not None and waiting.status is BatchStatus.PENDING
        # Nothing on disk yet: no other process knows these ids.
        assert store.read(running_id) is None and store.read(waiting_id) is None
        gate.set()
        assert queue.wait([running_id, waiting_id], timeout=30)
    for job_id, result in ((running_id, "through"), (waiting_id, "second")):
        job = store.read(job_id)
        assert job is not None and job.status is BatchStatus.COMPLETED and job.result == result
        assert job.seq == 1


def test_records_reach_the_folder_after_the_delay(tmp_path: Path) -> None:
    """What another process sees: a queued job's PENDING record, a silent job's RUNNING one."""
    blocked, started, gate = gated()
    with (
        StatusCache(tmp_path) as other,
        BatchQueue(1, status_dir=tmp_path, record_delay=0.05) as queue,
    ):
        running_id = queue.submit(blocked)
        waiting_id = queue.submit(lambda params: "second")
        assert started.wait(30)
        pending = wait_until(lambda: other.get(waiting_id), message="the PENDING record")
        assert pending.status is BatchStatus.PENDING and pending.seq == 1
        running = wait_until(lambda: other.get(running_id), message="the RUNNING record")
        assert running.status is BatchStatus.RUNNING and running.seq == 1
        assert running.started_at is not None and running.heartbeat_at is not None
        gate.set()
        assert queue.wait([running_id, waiting_id], timeout=30)
    store = StatusStore(tmp_path)
    waited = store.read(waiting_id)
    assert waited is not None and waited.status is BatchStatus.COMPLETED
    # PENDING written by the queue, then its end; RUNNING too if the worker stalled
    # past record_delay (0.05 s) in between (the next test has the margin to tell).
    assert waited.seq in (2, 3)


def test_a_job_whose_pending_record_was_written_defers_its_running_one(tmp_path: Path) -> None:
    """Waiting past ``record_delay`` got it a PENDING record; starting writes nothing more."""
    blocked, started, gate = gated()
    seen_at_start: list[BatchJob | None] = []
    store = StatusStore(tmp_path)

    def second(params: Any) -> str:
        seen_at_start.append(store.read(waiting_id))
        return "second"

    with (
        StatusCache(tmp_path) as other,
        BatchQueue(1, status_dir=tmp_path, record_delay=1.0) as queue,
    ):
        running_id = queue.submit(blocked)
        waiting_id = queue.submit(second)
        assert started.wait(30)
        pending = wait_until(lambda: other.get(waiting_id), message="the PENDING record")
        assert pending.status is BatchStatus.PENDING
        gate.set()
        assert queue.wait([running_id, waiting_id], timeout=30)
    (at_start,) = seen_at_start
    assert at_start is not None and at_start.status is BatchStatus.PENDING and at_start.seq == 1
    waited = store.read(waiting_id)
    assert waited is not None and waited.status is BatchStatus.COMPLETED
    assert waited.seq == 2  # PENDING, then its end: it ended well within record_delay


def test_a_progress_report_is_deferred_like_the_start(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    reported, gate = threading.Event(), threading.Event()

    def reports(params: Any) -> str:
        report_progress(0.25, "a quarter")  # would be written at once by a written job
        reported.set()
        gate.wait(30)
        return "done"

    with BatchQueue(1, status_dir=tmp_path, record_delay=0.05) as queue:
        job_id = queue.submit(reports)
        assert reported.wait(30)
        job = wait_until(lambda: store.read(job_id), message="the first write")
        assert job.status is BatchStatus.RUNNING and job.progress == 0.25
        assert job.message == "a quarter" and job.seq == 1
        gate.set()
        assert queue.wait([job_id], timeout=30)


def test_cancel_a_job_pending_in_memory(tmp_path: Path) -> None:
    blocked, started, gate = gated()
    ran: list[str] = []
    with BatchQueue(1, status_dir=tmp_path, record_delay=60) as queue:
        first = queue.submit(blocked)
        second = queue.submit(lambda params: ran.append("ran"))
        assert started.wait(30)
        assert queue.cancel(second)
        job = StatusStore(tmp_path).read(second)
        assert job is not None and job.status is BatchStatus.CANCELLED and job.seq == 1
        assert job.cancel_requested and job.params is None
        assert not queue.cancel(second)  # finished: nothing left to cancel
        gate.set()
        assert queue.wait([first, second], timeout=30)
    assert ran == []


def test_another_process_can_cancel_once_the_record_is_written(tmp_path: Path) -> None:
    started, stop = threading.Event(), threading.Event()

    def loops(params: Any) -> str:
        started.set()
        while not stop.wait(0.01):
            report_progress(0.5)  # raises JobCancelled once the cancel has reached us
        return "stopped by the test"

    other = StatusStore(tmp_path)  # stands for another process: only the folder in common
    from statusbridge.jobs._cancel import request_cancel

    with BatchQueue(1, status_dir=tmp_path, record_delay=0.05) as queue:
        job_id = queue.submit(loops)
        assert started.wait(30)
        wait_until(lambda: other.read(job_id), message="the RUNNING record")
        assert request_cancel(other, job_id)
        done = queue.wait([job_id], timeout=30)
        stop.set()
        assert done
    job = other.read(job_id)
    assert job is not None and job.status is BatchStatus.CANCELLED


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"record_delay": 0}, {}),
        ({}, {"job_id": "named-job"}),
        ({}, {"batch_id": "named-batch"}),
        ({"executor": "process"}, {}),
    ],
    ids=["record_delay=0", "given id", "batch id", "process"],
)
@pytest.mark.slow
def test_written_at_submit(tmp_path: Path, options: dict[str, Any], named: dict[str, str]) -> None:
    """No deferral where others can name the job (and cancel it) or where it runs elsewhere."""
    with BatchQueue(1, status_dir=tmp_path, **options) as queue:
        job_id = queue.submit(str, {"x": 1}, **named)  # str: picklable, module level
        job = StatusStore(tmp_path).read(job_id)
        assert job is not None and job.seq >= 1  # PENDING (or already further) on disk
        assert queue.wait([job_id], timeout=60)
    final = StatusStore(tmp_path).read(job_id)
    assert final is not None and final.status is BatchStatus.COMPLETED and final.seq == 3


def test_shutdown_cancel_pending_records_the_jobs_held_in_memory(tmp_path: Path) -> None:
    blocked, started, gate = gated()
    queue = BatchQueue(1, status_dir=tmp_path, record_delay=60)
    first = queue.submit(blocked)
    rest = [queue.submit(lambda params: "ran") for _ in range(5)]
    assert started.wait(30)
    gate.set()  # the running job ends; the five still queued are cancelled
    queue.shutdown(wait=True, cancel_pending=True)
    store = StatusStore(tmp_path)
    statuses = [store.read(job_id) for job_id in rest]
    assert all(job is not None and job.is_finished for job in statuses)
    first_job = store.read(first)
    assert first_job is not None and first_job.status is BatchStatus.COMPLETED


def test_claims_and_delayed_writes_race_without_losing_a_job(tmp_path: Path) -> None:
    """A delay so short that the supervisor writes PENDING records while workers claim jobs."""
    with BatchQueue(4, status_dir=tmp_path, record_delay=0.0005) as queue:
        ids = [queue.submit(lambda params: params * 2, i) for i in range(400)]
        assert queue.wait(ids, timeout=120)
        results = {job_id: queue.get_job_status(job_id) for job_id in ids}
    store = StatusStore(tmp_path)
    for i, job_id in enumerate(ids):
        job = store.read(job_id)
        assert job is not None, job_id
        assert job.status is BatchStatus.COMPLETED and job.result == i * 2, job
        # Claimed from memory (its end only: 1), or started from its PENDING record: its
        # RUNNING write deferred like any start from a record, and skipped if it ended
        # within record_delay (2), or written (3).
        assert job.seq in (1, 2, 3), job
        seen = results[job_id]
        assert seen is not None and seen.status is BatchStatus.COMPLETED


def test_a_bad_record_delay_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="record_delay"):
        BatchQueue(1, status_dir=tmp_path, record_delay=-1)
    with pytest.raises(ValueError, match="record_delay"):
        BatchQueue(1, status_dir=tmp_path, record_delay=float("nan"))


def test_a_job_cancelled_in_memory_raises_at_its_next_report(tmp_path: Path) -> None:
    """``report_progress`` raises JobCancelled for a job cancelled before its first write."""
    started, seen = threading.Event(), threading.Event()

    def waits(params: Any) -> str:
        started.set()
        for _ in range(3000):
            try:
                report_progress(0.1)
            except JobCancelled:
                seen.set()
                raise
            threading.Event().wait(0.01)  # a job's own work, not a test wait
        return "not cancelled"

    store = StatusStore(tmp_path)
    with BatchQueue(1, status_dir=tmp_path, record_delay=60) as queue:
        job_id = queue.submit(waits)
        assert started.wait(30)
        assert store.read(job_id) is None  # running in memory only
        assert queue.cancel(job_id)  # writes its record first, then asks it to stop
        assert queue.wait([job_id], timeout=30)
    assert seen.is_set()
    job = store.read(job_id)
    assert job is not None and job.status is BatchStatus.CANCELLED
    assert job.cancel_requested and job.started_at is not None


@pytest.mark.slow
def test_a_killed_application_leaves_written_records_that_are_judged(tmp_path: Path) -> None:
    """Once written, deferred records are judged like any: dead worker, abandoned pending job."""
    folder, gate, ready = tmp_path / "s", tmp_path / "gate", tmp_path / "ready"
    proc = mp.get_context("spawn").Process(
        target=deferred_queue_then_die, args=(str(folder), str(gate), str(ready))
    )
    proc.start()
    ids = wait_until(lambda: ready.exists() and ready.read_text().split(), 60, "both records")
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    running_id, pending_id = ids
    with BatchQueue(status_dir=folder) as queue:  # a new queue judges the folder at start
        running, pending = queue.store.read(running_id), queue.store.read(pending_id)
        assert running is not None and running.status is BatchStatus.FAILED
        assert (running.error_message or "").startswith("worker died: process")
        assert pending is not None and pending.status is BatchStatus.FAILED
        assert "abandoned" in (pending.error_message or "")


class CountingLock:
    """``DeferredRecords.writing`` that counts the workers that entered it (to see one wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.entered = 0

    def __enter__(self) -> None:
        if threading.current_thread().name.startswith("statusbridge-job"):
            with self._count_lock:
                self.entered += 1
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_failed_pending_write_does_not_lose_a_job_a_worker_waits_for(tmp_path: Path) -> None:
    """The supervisor's PENDING write fails while the job's worker waits for it to land.

    The failure is simulated (an OSError(ENOSPC) from the store, raised at the
    one moment that matters: a real full disk cannot be timed to one write);
    the threads, the queue and the files are real. The job must still run once.
    """
    blocked, started, gate = gated()
    with BatchQueue(1, status_dir=tmp_path, record_delay=0.05) as queue:
        writing = CountingLock()
        queue._deferred.writing = writing  # type: ignore[assignment]
        real_modify = queue.store.modify
        failed: list[str] = []

        def modify(job_id: str, change: Any) -> Any:
            if threading.current_thread().name == "statusbridge-queue" and not failed:
                failed.append(job_id)
                gate.set()  # the running job ends; its worker takes the next job ...
                # ... and finds it gone: being written, it waits for that write.
                wait_until(lambda: writing.entered >= 1, 30, "the worker waiting for the write")
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return real_modify(job_id, change)

        queue.store.modify = modify  # type: ignore[method-assign]
        first = queue.submit(blocked)
        second = queue.submit(lambda params: "second")
        assert started.wait(30)
        assert queue.wait([first, second], timeout=30)
        assert failed  # the simulated failure happened
    store = StatusStore(tmp_path)
    for job_id, result in ((first, "through"), (second, "second")):
        job = store.read(job_id)
        assert job is not None and job.status is BatchStatus.COMPLETED and job.result == result


def test_a_deferred_job_the_pool_refuses_ends_failed(tmp_path: Path) -> None:
    """A submit that fails leaves a FAILED record, never a PENDING one nobody will run."""
    executor = ThreadPoolExecutor(1)
    executor.shutdown()  # refuses new work: submit raises RuntimeError
    store = StatusStore(tmp_path)
    with BatchQueue(1, status_dir=tmp_path, executor=executor, record_delay=0.05) as queue:
        with pytest.raises(RuntimeError, match="after shutdown"):
            queue.submit(lambda params: "never")
        (job,) = wait_until(lambda: list(store.scan().values()), message="the job's record")
        assert job.status is BatchStatus.FAILED, job
        assert "could not submit" in (job.error_message or "")
        seen = queue.get_job_status(job.id)
        assert seen is not None and seen.status is BatchStatus.FAILED


def test_a_cancel_whose_write_fails_still_holds(tmp_path: Path) -> None:
    """Cancelling a job pending in memory while the disk is full (simulated: one OSError).

    The cancel must hold: the job never runs, and its record, written once the
    disk takes it again, says CANCELLED.
    """
    blocked, started, gate = gated()
    ran: list[str] = []
    with BatchQueue(1, status_dir=tmp_path, record_delay=60) as queue:
        first = queue.submit(blocked)
        second = queue.submit(lambda params: ran.append("ran"))
        assert started.wait(30)
        real_modify = queue.store.modify
        failed: list[str] = []

        def modify(job_id: str, change: Any) -> Any:
            if job_id == second and not failed:
                failed.append(job_id)
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return real_modify(job_id, change)

        queue.store.modify = modify  # type: ignore[method-assign]
        assert queue.cancel(second)
        assert failed
        seen = queue.get_job_status(second)
        assert seen is not None and seen.status is BatchStatus.CANCELLED
        gate.set()
        assert queue.wait([first, second], timeout=30)
        job = wait_until(lambda: StatusStore(tmp_path).read(second), 30, "the CANCELLED record")
        assert job.status is BatchStatus.CANCELLED and job.cancel_requested
    assert ran == []


def test_a_job_whose_only_write_fails_still_ends_with_a_record(tmp_path: Path) -> None:
    """The final write of a job run from memory, its only write, fails (simulated: one
    OSError(ENOSPC) from the store's first write, whichever thread makes it: the queue's).

    It must not vanish, nor lose what it did: its queue writes the outcome later
    (once it ended FAILED "worker failed: OSError ...").
    """
    with BatchQueue(1, status_dir=tmp_path, record_delay=60) as queue:
        real_modify = queue.store.modify
        failed: list[str] = []

        def modify(job_id: str, change: Any) -> Any:
            if not failed:
                failed.append(job_id)
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return real_modify(job_id, change)

        queue.store.modify = modify  # type: ignore[method-assign]
        job_id = queue.submit(lambda params: "done", {"x": 1})
        assert queue.wait([job_id], timeout=30)
        assert failed == [job_id]
        job = wait_until(lambda: queue.store.read(job_id), 30, "the job's record")
        assert job.status is BatchStatus.COMPLETED and job.result == "done"
        assert job.params == {"x": 1} and job.started_at is not None


def test_a_job_started_late_from_memory_is_written_by_its_first_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others see a job within ``record_delay`` of its submit, even if it waited first.

    A job claimed from memory after waiting its whole delay must not start a new
    one: its first write is due at once. The supervisor is kept from writing the
    PENDING record (the test holds the queue's write lock), so the worker claims
    the job after its delay is over. ``start_unwritten`` is wrapped (it still
    runs) to see the delay the claim gave the job.
    """
    delays: dict[str, float] = {}
    real_start = JobContext.start_unwritten

    def start_unwritten(
        ctx: JobContext, record: dict[str, Any], *, write_after: float, **how: bool
    ) -> None:
        delays[ctx.job_id] = write_after
        real_start(ctx, record, write_after=write_after, **how)

    monkeypatch.setattr(JobContext, "start_unwritten", start_unwritten)
    blocked, started, gate = gated()
    delay = 0.2
    with BatchQueue(1, status_dir=tmp_path, record_delay=delay) as queue:
        first = queue.submit(blocked)
        assert started.wait(30)
        later, later_started, later_gate = gated()
        with queue._deferred.writing:
            second = queue.submit(later)
            submitted_at = queue._deferred.entries[second].since
            wait_until(lambda: time.monotonic() > submitted_at + delay, 30, "the delay to pass")
            gate.set()  # the first job ends; its worker claims the second from memory
            assert later_started.wait(30)
        later_gate.set()
        assert queue.wait([first, second], timeout=30)
    assert 0 < delays[first] <= delay  # claimed at once: what is left of its delay
    assert delays[second] == 0.0  # its delay ran out while it waited: written at once


def test_shutdown_writes_what_a_failed_write_left_in_memory(tmp_path: Path) -> None:
    """A job cancelled in memory whose writes keep failing (ENOSPC, simulated) until shutdown.

    Its retry is pending when ``shutdown(wait=True)`` starts; the disk takes
    writes again by then: the record must be written before the queue lets go.
    """
    blocked, started, gate = gated()
    queue = BatchQueue(1, status_dir=tmp_path, record_delay=60)
    first = queue.submit(blocked)
    second = queue.submit(lambda params: "never")
    assert started.wait(30)
    real_modify = queue.store.modify
    full = threading.Event()
    full.set()

    def modify(job_id: str, change: Any) -> Any:
        if job_id == second and full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_modify(job_id, change)

    queue.store.modify = modify  # type: ignore[method-assign]
    assert queue.cancel(second)
    gate.set()
    assert queue.wait([first], timeout=30)
    full.clear()
    queue.shutdown(wait=True)
    job = StatusStore(tmp_path).read(second)
    assert job is not None and job.status is BatchStatus.CANCELLED


def test_a_write_that_keeps_failing_is_logged_once_not_at_every_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk stays full while a job runs from memory: the heartbeat thread retries its
    first write at every look, and logged a traceback each time (ten a second per job).

    The failure is simulated (OSError(ENOSPC) from the store, for the heartbeat
    thread only): a real full disk would fail the test's own files too.
    """
    blocked, started, gate = gated()
    with BatchQueue(1, status_dir=tmp_path, record_delay=0.01, progress_interval=0.01) as queue:
        real_modify = queue.store.modify
        full = threading.Event()
        full.set()
        attempts: list[str] = []

        def modify(job_id: str, change: Any) -> Any:
            if full.is_set() and threading.current_thread().name == "statusbridge-heartbeat":
                attempts.append(job_id)
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return real_modify(job_id, change)

        queue.store.modify = modify  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="statusbridge.jobs"):
            job_id = queue.submit(blocked)
            assert started.wait(30)
            wait_until(lambda: len(attempts) >= 20, 30, "20 failed writes")
            full.clear()
            store = StatusStore(tmp_path)
            wait_until(
                lambda: (
                    (job := store.read(job_id)) is not None and job.status is BatchStatus.RUNNING
                ),
                30,
                "the record, once the disk takes writes again",
            )
            gate.set()
            assert queue.wait([job_id], timeout=30)
    messages = [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records]
    failures = [m for m in messages if m[0] >= logging.ERROR]
    assert len(failures) == 1, failures
    assert "a heartbeat write failed" in failures[0][1] and failures[0][2] is not None
    assert any(f"job {job_id}: its record is written again" == m[1] for m in messages)
