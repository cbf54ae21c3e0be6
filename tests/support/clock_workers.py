"""A writer on "another host" whose clock is apart from the test's (importable by ``spawn``
children): its records' timestamps are shifted, in its own process only."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from statusbridge import BatchJob, StatusStore

OTHER_HOST = {"owner": "hostB:4242", "owner_machine": "0123456789abcdef"}


def shifted_writer(location: str, job_id: str, shift: float, folder: str, final: bool) -> None:
    """Run a job as a worker on hostB would, on a clock ``shift`` seconds off.

    RUNNING with batch and params, then a heartbeat every 50 ms (``<folder>/beats`` counts
    them) until ``<folder>/stop`` appears; then the final COMPLETED record if ``final``.
    A heartbeat never touches a finished record, as the real runner's does not.
    """

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=shift)

    stop, beats = Path(folder) / "stop", Path(folder) / "beats"
    with StatusStore(location, clock=clock) as store:
        store.update(job_id, status="running", batch_id="b1", params={"x": 1},
                     heartbeat_at=clock(), **OTHER_HOST)  # fmt: skip
        n = 0
        deadline = time.monotonic() + 120

        def beat(current: BatchJob | None) -> dict[str, Any] | None:
            if current is None or current.is_finished:
                return None
            return {"heartbeat_at": clock(), "progress": min(n / 1000, 0.99)}

        while not stop.exists() and time.monotonic() < deadline:
            n += 1
            store.modify(job_id, beat)
            beats.write_text(str(n))
            time.sleep(0.05)  # the worker's heartbeat interval
        if final:
            store.update(job_id, status="completed", result="done", progress=1.0)


def finished_writer(location: str, job_id: str, shift: float) -> None:
    """Write one job, COMPLETED at once, on a clock ``shift`` seconds off."""

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=shift)

    with StatusStore(location, clock=clock) as store:
        store.update(job_id, status="running", **OTHER_HOST)
        store.update(job_id, status="completed", result="done")
