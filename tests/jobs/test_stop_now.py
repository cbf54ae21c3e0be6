"""BatchQueue.stop_now: a program going away (a server stopping) leaves no job or worker behind."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from statusbridge import BatchQueue, BatchStatus

from support.waiting import wait_until
from support.workers import until_cancelled, wait_for_gate


@pytest.mark.slow
def test_stop_now_on_processes_cancels_ends_and_kills_what_ignores_its_cancel(
    tmp_path: Path,
) -> None:
    queue = BatchQueue(max_concurrent=2, status_dir=tmp_path / "s", executor="process")
    never = str(tmp_path / "never-opened")
    stubborn = queue.submit(wait_for_gate, {"gate": never}, job_id="stubborn")
    polite = queue.submit(until_cancelled, {}, job_id="polite")
    waiting = queue.submit(wait_for_gate, {"gate": never}, job_id="waiting")  # no free worker
    wait_until(
        lambda: all(
            (j := queue.get_job_status(i)) is not None and j.status is BatchStatus.RUNNING
            for i in (stubborn, polite)
        ),
        60,
        "both jobs running in their worker processes",
    )
    workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
    assert queue.stop_now(timeout=2.0)  # every job ended, the stubborn one by its worker's kill
    ended = {i: queue.get_job_status(i) for i in (stubborn, polite, waiting)}
    assert ended["waiting"].status is BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert ended["polite"].status is BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert ended["stubborn"].status is BatchStatus.FAILED  # type: ignore[union-attr]
    assert "worker process died" in (ended["stubborn"].error_message or "")  # type: ignore[union-attr]
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive  # no worker outlives the call: the server may exit right after it
    queue.shutdown()  # a second stop is fine


def test_stop_now_with_nothing_running_returns_at_once(tmp_path: Path) -> None:
    queue = BatchQueue(status_dir=tmp_path / "s", executor="process")
    assert queue.stop_now(timeout=1.0)
    queue.stop_now(timeout=1.0)  # twice is fine
