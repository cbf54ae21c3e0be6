"""The suite's own guard: a process left behind is found (re-parented ones too) and killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from support.processes import leftovers, popen, started_since


def test_an_orphaned_grandchild_is_found_and_killed() -> None:
    since = time.time()
    before = {p.pid for p in started_since(0)}
    # The shell exits at once; its `sleep` is re-parented to pid 1 (or a subreaper).
    subprocess.run(["sh", "-c", "sleep 300 &"], check=True, stdout=subprocess.DEVNULL)
    left = leftovers(since, before, grace=0.2)
    assert len(left) == 1 and "sleep 300" in left[0]
    assert not [p for p in started_since(since) if p.pid not in before]


def test_a_child_that_ended_is_not_reported() -> None:
    since = time.time()
    before = {p.pid for p in started_since(0)}
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert leftovers(since, before, grace=0.2) == []


def ignores_sigint(pid: int) -> bool:
    """From the kernel's own record of the process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_popen_gives_the_child_ctrl_c_even_where_this_process_ignores_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &`
    try:
        child = popen(["sleep", "300"])
        plain = subprocess.Popen(["sleep", "300"])  # inherits SIG_IGN across exec
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert ignores_sigint(plain.pid)  # the trap popen exists to undo
        assert not ignores_sigint(child.pid)
        child.send_signal(signal.SIGINT)
        assert child.wait(30) == -signal.SIGINT
    finally:
        for process in (child, plain):
            process.kill()
            process.wait(30)
