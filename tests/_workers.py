"""Functions run in child processes by the tests (importable by ``spawn`` children)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from statusbridge import StatusStore


def set_meta_keys(folder: str, job_id: str, worker: int, count: int) -> None:
    store = StatusStore(folder)
    for i in range(count):
        store.update(job_id, meta={f"w{worker}": i})


def write_forever(folder: str, job_ids: list[str], ready_file: str) -> None:
    """Rewrite records as fast as possible until killed (SIGKILL lands mid-write)."""
    store = StatusStore(folder)
    big = "x" * 20_000  # big enough that a write takes several syscalls
    for job_id in job_ids:
        store.update(job_id, message=big)
    Path(ready_file).touch()
    i = 0
    while True:
        job_id = job_ids[i % len(job_ids)]
        store.update(job_id, progress=(i % 100) / 100, meta={"i": i, "pad": big})
        i += 1


def hold_lock(folder: str, job_id: str, ready_file: str, release_file: str) -> None:
    """Hold the lock of ``job_id`` until ``release_file`` appears."""
    import time

    store = StatusStore(folder)
    with store._locks.hold(job_id, timeout=5):
        Path(ready_file).touch()
        while not os.path.exists(release_file):
            time.sleep(0.01)
    sys.exit(0)
