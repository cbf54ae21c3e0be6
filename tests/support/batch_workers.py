"""Jobs and whole applications that tests of batches run in other processes (spawned)."""

from __future__ import annotations

import itertools
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


def start_big_batch_pausing(
    batch_dir: str, status_dir: str, runs: str, jobs: int, out_file: str, *, gates: str
) -> None:
    """``start_big_batch`` whose feed pauses once, where a cancel from elsewhere matters most.

    After handing its first chunk of jobs on (to the pool, from memory, while the
    workers take and run them) and before its next look at the batch's cancel marker,
    the feed touches ``<gates>/paused`` and waits for ``<gates>/go`` (a condition wait):
    the test cancels meanwhile, while most of the batch has no record yet. No lock is
    held there, unlike a process stopped at a random point. (The workers' own looks at
    the marker, before each job leaves memory, go on.)
    """
    import threading

    from statusbridge.jobs import _batch_feed

    look_at_marker = _batch_feed.BatchFeed._stopped
    looks = itertools.count()

    def pausing(feed: _batch_feed.BatchFeed, job_id: str | None = None) -> bool:
        on_feed = threading.current_thread().name == "statusbridge-batch-feed"
        if on_feed and next(looks) == 1:  # the feed's first look after the first chunk
            Path(gates, "paused").touch()
            deadline = time.monotonic() + 120  # never outlive a failed test by long
            while not Path(gates, "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # a poll interval inside a condition wait
        return look_at_marker(feed, job_id)

    _batch_feed.BatchFeed._stopped = pausing  # type: ignore[method-assign,assignment]
    _batch_feed.FEED_CHUNK = 100  # several chunks in a batch a test can afford
    start_big_batch(batch_dir, status_dir, runs, jobs, out_file)
