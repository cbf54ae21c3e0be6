"""Child processes the tests start: they take Ctrl-C as in a terminal, and none outlives its test.

Two things a person's shell does that CI's does not:
- ``nohup ... &``, IDE task runners and some CI runners start pytest with SIGINT ignored, and an
  ignored signal stays ignored across ``exec``: a child the test stops with SIGINT never stops.
  ``popen`` gives each child SIGINT's default action back.
- A child that outlives its test (or a grandchild re-parented to pid 1) keeps files, ports and
  cores busy and fails some later, unrelated test with a ``ResourceWarning``. Every process the
  suite starts carries ``RUN_TAG`` in its environment, so ``started_since`` finds them all,
  grandchildren included, without anyone keeping a list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

RUN_TAG = "STATUSBRIDGE_TEST_RUN"
"""Set to this pytest's pid; inherited by every process the suite starts (unless a test
builds a child's environment from nothing, which ``child_env`` prevents)."""


_adopted: set[int] = set()


def adopt(pids: Iterable[int]) -> None:
    """Count these processes as a longer-lived fixture's, not the current test's.

    For a fixture whose server starts processes of its own during a test (a Dask cluster
    replacing a worker the test killed): the run's end still checks them.
    """
    _adopted.update(pids)


def tag_this_run() -> None:
    os.environ[RUN_TAG] = str(os.getpid())


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, tagged, plus ``extra``; what a test should pass as ``env``."""
    return {**os.environ, **extra}


def _sigint_as_in_a_terminal() -> None:
    # Runs in the child between fork and exec: only a signal call, nothing that takes a lock.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` whose child gets Ctrl-C's default action, even if pytest ignores it."""
    if os.name == "posix":
        kwargs.setdefault("preexec_fn", _sigint_as_in_a_terminal)
    return subprocess.Popen(args, **kwargs)


def _is_ours(process: psutil.Process, run: str) -> bool:
    try:
        return process.environ().get(RUN_TAG) == run
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def started_since(since: float, exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """Live processes of this test run (tagged, any parent) created at or after ``since``."""
    run = os.environ.get(RUN_TAG, "")
    skip = {os.getpid(), *exclude}
    found = []
    for process in psutil.process_iter(["create_time", "status"]):
        info = process.info
        if process.pid in skip or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        # create_time has a clock tick's resolution: a second's margin keeps the boundary in.
        if info["create_time"] is None or info["create_time"] < since - 1.0:
            continue
        if _is_ours(process, run):
            found.append(process)
    return found


def own_resource_tracker() -> set[int]:
    """The pid of multiprocessing's resource tracker serving this process, if it runs.

    It is started once per process on first use and ends when this process exits (its pipe
    closes): it belongs to the whole run, not to the test that happened to start it.
    """
    pids = set()
    for child in psutil.Process().children():
        try:
            if any("resource_tracker" in part for part in child.cmdline()):
                pids.add(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def describe(process: psutil.Process) -> str:
    try:
        cmd = " ".join(process.cmdline())[:200]
        return f"pid {process.pid} (parent {process.ppid()}): {cmd}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {process.pid} (gone)"


def leftovers(since: float, before: set[int], grace: float) -> list[str]:
    """Processes started since ``since`` (not in ``before``) still alive after ``grace`` seconds.

    Each is killed (SIGKILL), so that it fails only the test that left it; the result
    describes them for that test's failure message.
    """
    deadline = time.monotonic() + grace
    while True:
        alive = [
            p
            for p in started_since(since, exclude=before | own_resource_tracker() | _adopted)
            # A child of a process that was running before (a module fixture's server
            # replacing a worker) is that process's business, not this test's.
            if p.is_running() and _parent(p) not in before
        ]
        if not alive or time.monotonic() > deadline:
            break
        psutil.wait_procs(alive, timeout=min(0.2, max(deadline - time.monotonic(), 0.01)))
    described = [describe(p) for p in alive]
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=10)
    return described
