"""Functions run in child processes by the tests (importable by ``spawn`` children).

No condition variable crosses a process boundary, so a child waits for the test
by polling for a file the test creates (a condition wait, with a short poll
interval). The other sleeps here pace simulated work: they are the work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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
    with store._locks.hold(job_id, timeout=5):  # type: ignore[attr-defined]
        Path(ready_file).touch()
        deadline = time.monotonic() + 60  # never outlive a failed test by long
        while not os.path.exists(release_file) and time.monotonic() < deadline:
            time.sleep(0.01)
    sys.exit(0)


# -- job functions (module level, so process executors can pickle them) --------


def double(params: dict[str, int]) -> dict[str, int]:
    from statusbridge import report_progress

    report_progress(0.5, "halfway")
    if params.get("fail"):
        raise RuntimeError("boom")
    return {"value": params["x"] * 2}


def wait_for_gate(params: dict[str, str]) -> str:
    """Report progress, then block until the gate file exists (30 s at most).

    The bound keeps a failing test from hanging in ``shutdown(wait=True)``.
    """
    import time

    from statusbridge import report_progress

    report_progress(0.5, "waiting at the gate", pid=os.getpid())
    deadline = time.monotonic() + 30
    while not os.path.exists(params["gate"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)
    return "passed"


def until_cancelled(params: dict[str, object]) -> str:
    """Loop reporting progress until cancelled (JobCancelled escapes report_progress).

    A cancel reaches the loop through whichever call comes first: ``is_cancelled()``
    turning true, or ``report_progress`` raising JobCancelled (at once for a thread
    of this process, at its next write for a process). Which one wins is a race,
    so the job does not say which; once either has seen the cancel, ``is_cancelled()``
    must be true, and the job records what it returned (``meta.cancelled_inside``).
    """
    import time

    from statusbridge import JobCancelled, is_cancelled, report_progress

    try:
        report_progress(0.1, "looping", pid=os.getpid())
        for _ in range(100_000):
            if is_cancelled():
                report_progress(message="saw the cancel")  # raises JobCancelled
            report_progress(0.2)
            time.sleep(0.005)  # simulated work
    except JobCancelled:
        # Recorded even though report_progress raises JobCancelled again (the job's end writes it).
        report_progress(cancelled_inside=is_cancelled())
        raise
    return "never cancelled"


def many_reports(params: dict[str, int]) -> int:
    from statusbridge import report_progress

    n = params["n"]
    for i in range(n):
        report_progress((i + 1) / n, f"{i + 1}/{n}")
    return n


def bad_progress(params: object) -> None:
    from statusbridge import report_progress

    report_progress(1.5)


def unstorable_result(params: object) -> object:
    return {"a": {1, 2}}


def queue_then_die(folder: str, gate: str, ready: str) -> None:
    """A whole application: its queue starts a job and queues another, then it is killed."""
    import time

    from statusbridge import BatchQueue

    queue = BatchQueue(1, status_dir=folder)
    queue.submit(wait_for_gate, {"gate": gate}, job_id="running-one")
    queue.submit(wait_for_gate, {"gate": gate}, job_id="pending-one")
    deadline = time.monotonic() + 60  # never outlive a failed test by long
    while (job := queue.get_job_status("running-one")) is None or job.status != "running":
        if time.monotonic() > deadline:
            raise TimeoutError("the queue never started its first job")
        time.sleep(0.01)  # a poll interval of a condition wait (another process's)
    Path(ready).touch()
    time.sleep(600)  # SIGKILLed by the test


def progress_writer(folder: str, job_ids: list[str], steps: int, go_file: str) -> None:
    """Another program: runs jobs to completion, writing progress, once go_file exists."""
    import time

    store = StatusStore(folder)
    for job_id in job_ids:
        store.update(job_id, status="pending", batch_id="cli")
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never created the go file")
        time.sleep(0.01)  # a poll interval of a condition wait (another process's)
    for step in range(1, steps + 1):
        for job_id in job_ids:
            store.update(job_id, status="running", progress=step / steps, message=f"step {step}")
        time.sleep(0.02)
    for job_id in job_ids:
        store.update(job_id, status="completed", result=step)


def acked_writer(folder: str, job_id: str, ack_file: str, seed: int) -> None:
    """Update one job forever; after each update returns, append its number to ack_file."""
    import random

    rng = random.Random(seed)
    store = StatusStore(folder)
    pad = "p" * rng.randint(0, 50_000)  # vary the write size, so kills land at varied points
    with open(ack_file, "a", buffering=1) as acks:
        i = 0
        while True:
            store.update(job_id, meta={"i": i, "pad": pad})
            acks.write(f"{i}\n")
            i += 1


def rename_all(staging: str, folder: str, n: int, go: str, done: Any = None) -> None:
    """Once ``go`` exists, rename n prepared records from staging into folder, flat out.

    ``done`` (a shared ``RawValue``) counts the renames made, for a test that must
    not make a system call while it waits for them.
    """
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never created the go file")
        time.sleep(0.001)  # a poll interval of a condition wait (another process's)
    for i in range(n):
        os.rename(os.path.join(staging, f"b{i}.json"), os.path.join(folder, f"b{i}.json"))
        if done is not None:
            done.value = i + 1


def exit_at_gate(params: dict[str, object]) -> None:
    """Report that it runs, wait for the gate file, then die with ``os._exit(code)``."""
    import time

    from statusbridge import report_progress

    report_progress(0.5, "about to die", pid=os.getpid())
    deadline = time.monotonic() + 30
    while not os.path.exists(str(params["gate"])) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(int(params["code"]))  # type: ignore[call-overload]


def create_and_start_batch(batch_dir: str, status_dir: str, out_file: str) -> None:
    """Another application: creates a batch on the shared folders and runs it until cancelled."""
    from statusbridge import BatchManager

    manager = BatchManager(batch_dir, 2, status_dir)
    batch_id = manager.create_custom_batch([{}, {}], "from another process")
    manager.start_batch(batch_id, until_cancelled)
    Path(out_file).write_text(batch_id)
    manager.shutdown(wait=True)


def deferred_queue_then_die(folder: str, gate: str, ready: str) -> None:
    """Like ``queue_then_die`` with generated ids: records reach the folder after record_delay.

    Writes the two job ids to ``ready`` once both records are on disk (RUNNING and
    PENDING), then waits to be killed.
    """
    import time

    from statusbridge import BatchQueue

    queue = BatchQueue(1, status_dir=folder, record_delay=0.05)
    running = queue.submit(wait_for_gate, {"gate": gate})
    pending = queue.submit(wait_for_gate, {"gate": gate})
    store = StatusStore(folder)
    deadline = time.monotonic() + 60  # the test fails on its own wait; do not outlive it
    while time.monotonic() < deadline and not (
        (r := store.read(running)) is not None
        and r.status == "running"
        and (p := store.read(pending)) is not None
        and p.status == "pending"
    ):
        time.sleep(0.01)  # a poll interval inside a condition wait
    if time.monotonic() >= deadline:
        return  # never ready: the test's own wait fails and says so
    Path(ready).write_text(f"{running} {pending}")
    time.sleep(600)  # the behaviour under test: alive until SIGKILLed by the test


def count_run(params: dict[str, str]) -> str:
    """A job that leaves one file per run (O_EXCL, a fresh name), so a test counts its runs."""
    import secrets

    run = Path(params["runs"], f"{params['job']}.{os.getpid()}.{secrets.token_hex(8)}")
    os.close(os.open(run, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return run.name


def start_batch_at_gate(
    batch_dir: str, status_dir: str, batch_id: str, gates: str, number: int
) -> None:
    """One of several applications that click "start" on the same batch at once.

    Builds its manager, touches ``<gates>/ready-<number>``, waits for
    ``<gates>/go`` (a condition wait: the test releases every child together),
    calls ``start_batch`` and, once its jobs are done, writes ``<pid> started``
    or ``<pid> refused: <error>`` to ``<gates>/out-<number>``.
    """
    import time

    from statusbridge import BatchManager

    manager = BatchManager(batch_dir or None, 2, status_dir)
    Path(gates, f"ready-{number}").touch()
    go = Path(gates, "go")
    deadline = time.monotonic() + 60  # never outlive a failed test by long
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)  # a poll interval inside a condition wait
    try:
        manager.start_batch(batch_id, count_run)
        outcome = "started"
    except ValueError as exc:
        outcome = f"refused: {exc}"
    manager.shutdown(wait=True)
    Path(gates, f"out-{number}").write_text(f"{os.getpid()} {outcome}")
