"""Simulated work for the demo app, and "another program" that writes statuses.

``statusbridge simulate --jobs 20`` (the CLI runs ``run_external``) writes job
records straight into the status folder with ``StatusStore`` (no queue, no
manager), and any ``StatusCache`` on that folder shows them live.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from statusbridge.errors import JobCancelled
from statusbridge.jobs import is_cancelled, report_progress
from statusbridge.record import BatchStatus
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
    """Write ``jobs`` jobs' progress into ``folder`` from this process, in parallel steps."""
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
    for step in range(1, STEPS + 1):
        time.sleep(duration / STEPS)
        for job_id in ids:
            if job_id in failing and step == STEPS // 2:
                store.update(
                    job_id,
                    status=BatchStatus.FAILED,
                    error_message="RuntimeError: simulated external failure",
                )
                continue
            if job_id in failing and step > STEPS // 2:
                continue
            store.update(
                job_id,
                status=BatchStatus.RUNNING,
                progress=step / STEPS,
                message=f"external step {step}/{STEPS}",
            )
    for job_id in ids:
        if job_id not in failing:
            store.update(job_id, status=BatchStatus.COMPLETED, result={"by": owner})
    return batch_id
