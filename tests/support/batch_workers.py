"""Jobs and whole applications that tests of batches run in other processes (spawned)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch_and_linger(params: dict[str, str]) -> str:
    """A job that leaves one file per run, then takes a few milliseconds."""
    run = Path(params["runs"], f"{params['job']}.{os.getpid()}")
    os.close(os.open(run, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    time.sleep(0.005)
    return run.name


def start_big_batch(batch_dir: str, status_dir: str, runs: str, jobs: int, out_file: str) -> None:
    """Another application: creates a big batch, says its id, starts it and runs it to its end."""
    from statusbridge import BatchManager

    manager = BatchManager(batch_dir, 2, status_dir, max_completed_jobs=10 * jobs)
    params = [{"runs": runs, "job": str(i)} for i in range(jobs)]
    batch_id = manager.create_custom_batch(params, "big")
    # Said before the start: the test cancels while start_batch may still be running.
    Path(out_file + ".tmp").write_text(batch_id)
    os.replace(out_file + ".tmp", out_file)
    manager.start_batch(batch_id, touch_and_linger)
    manager.shutdown(wait=True)
