"""Functions the desktop tests and the Qt benchmark run in ``spawn`` child processes."""

from __future__ import annotations

import time

from statusbridge import JobCancelled, StatusStore, is_cancelled, report_progress


def write_job(folder: str, job_id: str, fields: dict[str, object]) -> None:
    """One write from another process, as another program would do it."""
    with StatusStore(folder) as store:
        store.update(job_id, **fields)


def delete_job(folder: str, job_id: str) -> None:
    with StatusStore(folder) as store:
        store.delete(job_id)


def loop_until_cancelled(params: dict[str, float]) -> str:
    """A job that reports progress until it is asked to stop, then ends CANCELLED."""
    deadline = time.monotonic() + params.get("limit", 60.0)  # never outlive a failed test
    step = 0
    while time.monotonic() < deadline:
        step += 1
        report_progress(min(0.99, step / 1000), f"step {step}")
        if is_cancelled():  # report_progress raises JobCancelled too, at its next write
            raise JobCancelled(f"stopped at step {step}")
        time.sleep(0.01)  # the job's work
    return "ran out"
