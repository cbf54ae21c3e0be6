"""Child-process functions for the backend contract tests (importable by ``spawn`` children)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from statusbridge import BatchJob, StatusStore


def increment(location: str, job_id: str, count: int, go_file: str) -> None:
    """``count`` conditional increments of meta["n"] through ``modify``, after ``go_file``."""
    store = StatusStore(location)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)  # a poll interval while waiting for the start signal

    def plus_one(current: BatchJob | None) -> dict[str, Any]:
        n = current.meta.get("n", 0) if current is not None else 0
        return {"meta": {"n": n + 1}}

    for _ in range(count):
        store.modify(job_id, plus_one)
    store.close()


def write_steps(location: str, job_id: str, steps: int) -> None:
    """Write progress 1..steps, the last one also COMPLETED."""
    with StatusStore(location) as store:
        for i in range(1, steps + 1):
            store.update(job_id, progress=i / steps, meta={"i": i})
        store.update(job_id, status="completed")


def follow_and_answer(location: str) -> None:
    """A cache in a process of its own (a test stops it with SIGSTOP): answers each stdin
    line with the number of jobs in its snapshot."""
    import sys

    from statusbridge import StatusCache

    with StatusCache(location, reconcile_interval=3600) as cache:
        print("ready", flush=True)
        for _ in sys.stdin:
            print(len(cache.snapshot()), flush=True)
