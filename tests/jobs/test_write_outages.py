"""Status writes that fail for a while (a full disk, a server restarting) lose nothing.

The outage is real: the store's ``.tmp/`` sub-folder, where every write starts,
is replaced by a plain file, so each write fails on the real file system until
the folder is back (no root needed, unlike a full tmpfs). Before this, a job
that ended during the outage lost its outcome and stayed RUNNING on disk, a
queued job failed or stayed PENDING for good, a progress write killed its job,
and ``wait()`` never returned True.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchQueue, BatchStatus, StatusStore, report_progress
from statusbridge.jobs import _write_retries

from support.waiting import wait_until


@contextmanager
def writes_fail(folder: Path) -> Iterator[None]:
    """Every write in ``folder`` fails until the block ends (its temp folder is a file).

    Writers that run meanwhile make the temp folder again as soon as it is gone, so it
    is moved aside (one rename) and the file put in its place only if no writer was first.
    """
    temp = folder / ".tmp"
    for attempt in range(1000):
        aside = folder / f".tmp-aside-{attempt}"
        with suppress(FileNotFoundError):
            temp.rename(aside)
            shutil.rmtree(aside)
        try:
            with open(temp, "xb"):
                break
        except FileExistsError:
            continue  # a writer made the folder again first: move that one aside too
    else:
        pytest.fail("could not replace the temp folder by a file: writers kept making it")
    try:
        yield
    finally:
        temp.unlink()
        temp.mkdir(mode=0o700, exist_ok=True)  # a write may have made it meanwhile


def reporting_until(gate: threading.Event, started: threading.Event) -> Callable[[Any], Any]:
    """A job that reports progress until the gate opens, then returns its params."""

    def job(params: Any) -> Any:
        started.set()
        while not gate.wait(0.01):
            report_progress(0.5, "working")  # fails during the outage: must not kill us
        return params

    return job


def test_jobs_that_end_or_start_during_an_outage_finish_once_writes_work(tmp_path: Path) -> None:
    gate, started = threading.Event(), [threading.Event(), threading.Event()]
    with BatchQueue(2, status_dir=tmp_path, record_delay=0, progress_interval=0.01) as queue:
        try:
            running = [queue.submit(reporting_until(gate, started[n]), {"n": n}) for n in range(2)]
            queued = [queue.submit(lambda params: params, {"n": n}) for n in range(2, 4)]
            # Both started before the outage (a start during it is the queued jobs' case).
            assert all(event.wait(30) for event in started)
            with writes_fail(tmp_path):
                gate.set()
                # The running jobs end, but their final writes fail; the queued ones
                # cannot write their start: the queue keeps the former, retries the latter.
                wait_until(
                    lambda: (
                        all(j in queue._retries for j in running) and queue._submissions.restarts
                    ),
                    30,
                    "outcomes kept in memory and a start to be tried again",
                )
                for job_id, n in zip(running, range(2), strict=True):
                    shown = queue.get_job_status(job_id)
                    assert shown is not None and shown.status is BatchStatus.COMPLETED
                    assert shown.result == {"n": n}  # shown at once, not lost
                on_disk = StatusStore(tmp_path).read(running[0])
                assert on_disk is not None and on_disk.status is BatchStatus.RUNNING
            assert queue.wait(timeout=60)
            store = StatusStore(tmp_path)

            def all_completed() -> bool:
                jobs = [store.read(j) for j in running + queued]
                return all(j is not None and j.status is BatchStatus.COMPLETED for j in jobs)

            wait_until(all_completed, 30, "every record written COMPLETED")
            for n, job_id in enumerate(running + queued):
                record = store.read(job_id)
                assert record is not None and record.result == {"n": n}
        finally:
            gate.set()  # a failure above must not leave the jobs, and the exit, waiting


def test_shutdown_during_a_lasting_outage_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the default 10 s of tries.
    monkeypatch.setattr(_write_retries, "SHUTDOWN_WRITE_TRIES", 0.2)
    gate, started = threading.Event(), threading.Event()
    queue = BatchQueue(1, status_dir=tmp_path, record_delay=0, progress_interval=0.01)
    ended = queue.submit(reporting_until(gate, started))
    waiting = queue.submit(lambda params: "never started")
    try:
        assert started.wait(30)
        with writes_fail(tmp_path), caplog.at_level(logging.WARNING, logger="statusbridge.jobs"):
            gate.set()
            wait_until(
                lambda: ended in queue._retries and queue._submissions.restarts,
                30,
                "the outage seen",
            )
            queue.shutdown(wait=True)
            lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        gate.set()  # a failure above must not leave the job, and the process, running
        queue.shutdown(wait=True)
    assert f"job {ended}: its final record could not be written; it is lost" in lost
    assert f"job {waiting}: its final record could not be written; it is lost" in lost
    # Both records still say what they said last, PENDING and RUNNING: nothing false.
    records = StatusStore(tmp_path).scan()
    assert {j.status for j in records.values()} == {BatchStatus.RUNNING, BatchStatus.PENDING}
    assert not os.listdir(tmp_path / ".tmp")
