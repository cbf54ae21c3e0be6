"""Simulated work for the demo app, and "another program" that writes statuses.

``statusbridge simulate --jobs 20`` (the CLI runs ``run_external``) writes job
records straight into the status folder with ``StatusStore`` (no queue, no
manager), and any ``StatusCache`` on that folder shows them live. It honours
cancellation as any program should: a job asked to stop ends CANCELLED.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from statusbridge.errors import JobCancelled
from statusbridge.jobs import is_cancelled, report_progress
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore

__all__ = ["run_external", "simulated_job"]

STEPS = 20


def simulated_job(params: dict[str, Any]) -> dict[str, Any]:
    """Sleep through ``duration`` seconds in steps, reporting progress; maybe fail.

    Module level so that process workers can import it.
    """
    duration = float(params.get("duration", 2.0))
    fail_at = params.get("fail_at")  # a step number, or None
    for step in range(1, STEPS + 1):
        if is_cancelled():
            raise JobCancelled(f"stopped at step {step}")
        time.sleep(duration / STEPS)
        report_progress(step / STEPS, f"step {step}/{STEPS}", step=step)
        if fail_at is not None and step >= int(fail_at):
            raise RuntimeError(f"simulated failure at step {step}")
    return {"steps": STEPS, "seconds": duration, "pid": os.getpid()}


def run_external(folder: str, jobs: int, duration: float, fail_rate: float, seed: int) -> str:
    """Write ``jobs`` jobs' progress into ``folder`` from this process, in parallel steps.

    Cooperative cancellation, as any other program should do it: every write is a
    ``StatusStore.modify`` that looks at the record first. A job whose record asks
    it to stop (``cancel_requested``: ``statusbridge cancel``, the demo's "Cancel
    batch", ``BatchManager.cancel_batch``) ends CANCELLED at its next step, and a
    job that was cancelled while pending (its record is final already) is left alone.
    """
    store = StatusStore(folder)
    rng = random.Random(seed)
    batch_id = f"external-{time.strftime('%H%M%S')}-{os.getpid()}"
    ids = [f"{batch_id}-{i:03d}" for i in range(jobs)]
    failing = {job_id for job_id in ids if rng.random() < fail_rate}
    owner = f"external:{os.getpid()}"
    for job_id in ids:
        store.update(
            job_id,
            status=BatchStatus.PENDING,
            batch_id=batch_id,
            owner=owner,
            message="written by another program",
        )
    live = list(ids)  # the jobs this program still writes
    for step in range(1, STEPS + 1):
        if not live:
            break  # every job failed or was cancelled: nothing left to do
        time.sleep(duration / STEPS)
        live = [
            job_id
            for job_id in live
            if _still_running(store.modify(job_id, _external_step(step, job_id in failing)))
        ]
    for job_id in live:
        store.modify(job_id, _external_end(owner))
    return batch_id


def _still_running(job: BatchJob | None) -> bool:
    return job is not None and not job.is_finished


def _stopped(step: int) -> dict[str, Any]:
    return {"status": BatchStatus.CANCELLED, "message": f"stopped at step {step}/{STEPS}: asked to"}


def _external_step(step: int, failing: bool) -> Callable[[BatchJob | None], dict[str, Any] | None]:
    def change(current: BatchJob | None) -> dict[str, Any] | None:
        if current is None or current.is_finished:
            return None  # removed, or cancelled while pending: not ours any more
        if current.cancel_requested:
            return _stopped(step)
        if failing and step == STEPS // 2:
            return {
                "status": BatchStatus.FAILED,
                "error_message": "RuntimeError: simulated external failure",
            }
        return {
            "status": BatchStatus.RUNNING,
            "progress": step / STEPS,
            "message": f"external step {step}/{STEPS}",
        }

    return change


def _external_end(owner: str) -> Callable[[BatchJob | None], dict[str, Any] | None]:
    def change(current: BatchJob | None) -> dict[str, Any] | None:
        if current is None or current.is_finished:
            return None
        if current.cancel_requested:
            return _stopped(STEPS)
        return {"status": BatchStatus.COMPLETED, "result": {"by": owner}}

    return change
