"""Review of write outages: what the first tests missed.

The outage is real, as in ``test_write_outages``: the store's ``.tmp/`` is a
plain file, so every write in the folder fails until it is a folder again. A
cache that only moves when the test rescans it (polling, hour-long interval)
stands for a cache that lags behind the disk, which the real watch does for a
few milliseconds after each write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_write_outages import writes_fail

from statusbridge import BatchQueue, BatchStatus, StatusCache, StatusStore
from statusbridge.jobs import _supervisor, _write_retries
from statusbridge.jobs._write_retries import Backoff

from support import workers
from support.waiting import poll_until, wait_until


@pytest.fixture
def still_cache(tmp_path: Path) -> Iterator[StatusCache]:
    """A cache that changes only when the test calls ``rescan()``."""
    cache = StatusCache(tmp_path, polling=True, poll_interval=3600, reconcile_interval=3600)
    try:
        yield cache
    finally:
        cache.close()


def gated(gate: threading.Event, started: threading.Event) -> Any:
    def job(params: Any) -> Any:
        started.set()
        assert gate.wait(60)
        return params

    return job


def test_an_outcome_kept_in_memory_still_shows_once_the_cache_reads_the_disk(
    tmp_path: Path, still_cache: StatusCache
) -> None:
    """The job ends before the cache saw it RUNNING; its outcome write fails.

    The kept record was built on the PENDING one (seq 1), so it has the seq of
    the RUNNING record on disk (2): once the cache reads that, the queue took
    the cache as caught up and showed RUNNING again (and dropped its record).
    """
    gate, started = threading.Event(), threading.Event()
    with BatchQueue(1, status_dir=tmp_path, cache=still_cache, record_delay=0) as queue:
        job_id = queue.submit(gated(gate, started), {"n": 1})
        assert started.wait(30)
        with writes_fail(tmp_path):
            gate.set()
            wait_until(lambda: job_id in queue._retries, 30, "the outcome kept")
            still_cache.rescan()  # reads the RUNNING record the job wrote at its start
            assert still_cache.get(job_id) is not None
            queue.maintain()  # prunes what it takes for caught up
            shown = queue.get_job_status(job_id)
            assert shown is not None and shown.status is BatchStatus.COMPLETED, shown
            assert queue.wait([job_id], timeout=0.1)
            assert [j.id for j in queue.unseen_records(still_cache.snapshot())] == [job_id]
        wait_until(lambda: job_id not in queue._retries, 30, "the outcome written")
        record = StatusStore(tmp_path).read(job_id)
        assert record is not None and record.status is BatchStatus.COMPLETED


def retry_now(queue: BatchQueue, job_id: str) -> None:
    """Make the kept write of ``job_id`` due now (the test held it back an hour)."""
    with queue._retries.lock:
        kept = queue._retries.kept(job_id)
        if kept is None:
            return  # dropped already (a new run of the job)
        queue._retries.entries[job_id] = replace(kept, due=0.0)
    queue._events.put(_supervisor.WAKE)


def test_a_retried_outcome_never_lands_on_a_new_run_of_the_same_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the outage, before the retry: the old run is finished by someone else
    (here a store in the test, as another process judging it dead would) and the
    job id runs again. The old outcome must not be written over the new run."""
    # The test says when it is due.
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(3600.0, 5.0))
    first, second, started = threading.Event(), threading.Event(), threading.Event()
    with BatchQueue(2, status_dir=tmp_path, record_delay=0) as queue:
        queue.submit(gated(first, started), {"run": 1}, job_id="again")
        assert started.wait(30)
        with writes_fail(tmp_path):
            first.set()
            wait_until(lambda: "again" in queue._retries, 30, "the outcome kept")
        StatusStore(tmp_path).update("again", status=BatchStatus.FAILED, error_message="dead")
        started.clear()
        queue.submit(gated(second, started), {"run": 2}, job_id="again")
        try:
            assert started.wait(30)
            retry_now(queue, "again")
            wait_until(lambda: "again" not in queue._retries, 30, "the retry done")
            record = StatusStore(tmp_path).read("again")
            assert record is not None and record.params == {"run": 2}
            assert record.status is BatchStatus.RUNNING and record.result is None, record
        finally:
            second.set()
        assert queue.wait(["again"], timeout=30)
    record = StatusStore(tmp_path).read("again")
    assert record is not None and record.status is BatchStatus.COMPLETED
    assert record.result == {"run": 2}


def test_a_retried_outcome_does_not_bring_back_a_removed_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone removes the record (``StatusStore.delete``, the folder wiped) while the
    outcome waits for its retry: the retry must not create a record of the outcome
    alone (no params, no batch, a new created_at)."""
    # The test says when it is due.
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(3600.0, 5.0))
    gate, started = threading.Event(), threading.Event()
    with BatchQueue(1, status_dir=tmp_path, record_delay=0) as queue:
        job_id = queue.submit(gated(gate, started), {"n": 1}, batch_id="b1")
        assert started.wait(30)
        with writes_fail(tmp_path):
            gate.set()
            wait_until(lambda: job_id in queue._retries, 30, "the outcome kept")
        assert StatusStore(tmp_path).delete(job_id)
        retry_now(queue, job_id)
        wait_until(lambda: job_id not in queue._retries, 30, "the retry done")
        assert StatusStore(tmp_path).read(job_id) is None


def outage_with_a_start_to_retry(
    queue: BatchQueue, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """One job ends and another cannot start while writes fail (the caller's outage).

    Returns (ended, waiting): the first's outcome is kept, the second waits to
    be started again an hour from now (the tests say what happens before that).
    """
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(3600.0, 3600.0))
    gate, started = threading.Event(), threading.Event()
    ended = queue.submit(gated(gate, started), {"n": 1})
    waiting = queue.submit(lambda params: "ran", {"n": 2})
    assert started.wait(30)
    with writes_fail(folder):
        gate.set()
        wait_until(lambda: waiting in queue._submissions.restarts, 30, "a start to try again")
    # shutdown's pause between its tries
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(0.01, 3600.0))
    return ended, waiting


def test_shutdown_runs_a_job_waiting_to_be_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outage is over; ``shutdown(wait=True)`` lets queued jobs finish. A job
    that waits for another try at its start is queued: it failed instead ("could
    not be started: its record could not be written", untrue by then)."""
    queue = BatchQueue(1, status_dir=tmp_path, record_delay=0)
    ended, waiting = outage_with_a_start_to_retry(queue, tmp_path, monkeypatch)
    queue.shutdown(wait=True)
    store = StatusStore(tmp_path)
    first, second = store.read(ended), store.read(waiting)
    assert first is not None and first.status is BatchStatus.COMPLETED
    assert second is not None and second.status is BatchStatus.COMPLETED, second
    assert second.result == "ran"


def test_shutdown_cancelling_pending_jobs_during_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shutdown(cancel_pending=True)`` while writes fail: it raised the write error
    of the first cancel (the pool and the supervisor left running). It must go on,
    and the job that waited to start again ends CANCELLED, not FAILED, once the
    outage is over (here: as soon as shutdown has kept the cancel for a retry)."""
    queue = BatchQueue(1, status_dir=tmp_path, record_delay=0)
    ended, waiting = outage_with_a_start_to_retry(queue, tmp_path, monkeypatch)
    outage = writes_fail(tmp_path)
    outage.__enter__()
    try:
        ends = threading.Thread(
            target=lambda: (
                poll_until(lambda: waiting in queue._retries, 30),
                outage.__exit__(None, None, None),
            )
        )
        ends.start()
        queue.shutdown(wait=True, cancel_pending=True)
    finally:
        ends.join(60)
        if (tmp_path / ".tmp").is_file():
            outage.__exit__(None, None, None)
    assert not queue._life.thread.is_alive()
    store = StatusStore(tmp_path)
    first, second = store.read(ended), store.read(waiting)
    assert first is not None and first.status is BatchStatus.COMPLETED
    assert second is not None and second.status is BatchStatus.CANCELLED, second


@pytest.mark.slow
def test_a_process_pool_keeps_outcomes_and_starts_again(tmp_path: Path) -> None:
    """Checked, held: both errors cross the process boundary (they pickle) and the
    queue writes the outcome and starts the job again from the parent process."""
    folder, gate = tmp_path / "status", tmp_path / "gate"
    folder.mkdir()
    with BatchQueue(1, status_dir=folder, executor="process", record_delay=0) as queue:
        ended = queue.submit(workers.wait_for_gate, {"gate": str(gate)})
        waiting = queue.submit(workers.double, {"x": 2})
        store = StatusStore(folder)
        wait_until(lambda: getattr(store.read(ended), "status", None) is BatchStatus.RUNNING, 60)
        with writes_fail(folder):
            gate.touch()
            wait_until(
                lambda: ended in queue._retries and waiting in queue._submissions.restarts,
                60,
                "the outcome kept and the start to try again",
            )
        assert queue.wait(timeout=60)
    first, second = store.read(ended), store.read(waiting)
    assert first is not None and first.result == "passed"
    assert second is not None and second.result == {"value": 4}


def test_a_queued_job_kept_in_memory_logs_its_failing_write_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job waiting in memory (``record_delay``) whose PENDING write keeps failing:
    the supervisor retries it every 0.5 s, and logged a traceback at every try
    (one per queued job per try: thousands a minute with a long queue). A spy on
    the store counts the tries (it changes nothing)."""
    gate, started = threading.Event(), threading.Event()
    with BatchQueue(1, status_dir=tmp_path, record_delay=0.01) as queue:
        real_modify = queue.store.modify
        tries: list[str] = []

        def counting(job_id: str, change: Any) -> Any:
            tries.append(job_id)
            return real_modify(job_id, change)

        queue.store.modify = counting  # type: ignore[method-assign]
        running = queue.submit(gated(gate, started))
        try:
            assert started.wait(30)
            wait_until(lambda: queue.store.read(running), 30, "the running job's record")
            with caplog.at_level(logging.INFO, logger="statusbridge.jobs"), writes_fail(tmp_path):
                queued = queue.submit(lambda params: "ran")
                wait_until(lambda: tries.count(queued) >= 4, 30, "4 tries of its write")
        finally:
            gate.set()
        assert queue.wait(timeout=30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in errors if queued in m]) == 1, errors


def ended_in_an_outage(
    queue: BatchQueue, folder: Path, monkeypatch: pytest.MonkeyPatch, job_id: str
) -> None:
    """Run ``job_id`` to its end during an outage; its outcome waits (an hour) for a retry."""
    # The test says when it is due.
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(3600.0, 5.0))
    gate, started = threading.Event(), threading.Event()
    queue.submit(gated(gate, started), {"run": 1}, job_id=job_id)
    assert started.wait(30)
    with writes_fail(folder):
        gate.set()
        wait_until(lambda: job_id in queue._retries, 30, "the outcome kept")
    assert queue.wait([job_id], timeout=1)  # shown COMPLETED at once


def test_a_job_whose_outcome_waits_for_its_retry_is_not_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It is shown COMPLETED; ``cancel`` returned True (documented: False for a
    finished job) and wrote ``cancel_requested`` into its RUNNING record."""
    with BatchQueue(1, status_dir=tmp_path, record_delay=0) as queue:
        ended_in_an_outage(queue, tmp_path, monkeypatch, "done-already")
        assert not queue.cancel("done-already")
        record = StatusStore(tmp_path).read("done-already")
        assert record is not None and not record.cancel_requested


def test_a_job_shown_completed_can_run_again_before_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait`` said it ended; submitting the id again raised ValueError ("already
    exists and is running") until the retry came (up to WRITE_RETRY_MAX later)."""
    with BatchQueue(1, status_dir=tmp_path, record_delay=0) as queue:
        ended_in_an_outage(queue, tmp_path, monkeypatch, "rerun")
        queue.submit(lambda params: params, {"run": 2}, job_id="rerun")
        assert queue.wait(["rerun"], timeout=30)
        shown = queue.get_job_status("rerun")
        assert shown is not None and shown.result == {"run": 2}


def test_a_start_tried_again_and_again_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new try at a job's start logged a warning with the whole error (up to
    START_TRIES per queued job: a long queue floods the log in an outage)."""
    monkeypatch.setattr(_write_retries, "WRITE_BACKOFF", Backoff(0.01, 0.01))
    gate, started = threading.Event(), threading.Event()
    with BatchQueue(1, status_dir=tmp_path, record_delay=0) as queue:
        queue.submit(gated(gate, started))
        waiting = queue.submit(lambda params: "ran")
        assert started.wait(30)

        def tries() -> int:
            sub = queue._submissions.get(waiting)
            return 0 if sub is None else sub.attempts

        with caplog.at_level(logging.INFO, logger="statusbridge.jobs"), writes_fail(tmp_path):
            gate.set()
            wait_until(lambda: tries() >= 4, 30, "4 tries at its start")
        assert queue.wait(timeout=30)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in warned if waiting in m]) == 1, warned
