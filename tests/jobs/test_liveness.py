"""Who owns a job, and is it alive: psutil on every OS, machines told apart by id, not name.

Real processes throughout: children are started and killed; only a start time that
does not match a live pid is written by hand (a real pid reuse cannot be provoked).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from statusbridge import BatchJob, BatchQueue, BatchStatus, StatusStore
from statusbridge.jobs._liveness import (
    HOST,
    START_TOLERANCE_MS,
    is_owner_alive,
    local_pid,
    machine_id,
    process_start,
    this_process,
)

from support.waiting import wait_until

IDENTITY = (
    "import json, time\n"
    "from statusbridge.jobs._liveness import this_process\n"
    "print(json.dumps(this_process().fields()), flush=True)\n"
    "time.sleep(600)  # killed by the test\n"
)
OTHER_MACHINE = "0123456789abcdef"  # another boot, machine or pid namespace
TIMEOUT = 60.0


class Child:
    """A real child process that reports the owner fields it would write."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", IDENTITY], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.fields: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child()
    yield c
    if c.proc.poll() is None:
        c.kill()


def running(now: datetime, **fields: Any) -> BatchJob:
    return BatchJob(id="j", status=BatchStatus.RUNNING, heartbeat_at=now, **fields)


def alive(job: BatchJob, now: datetime, timeout: float = TIMEOUT) -> bool:
    return is_owner_alive(job, now=now, heartbeat_timeout=timeout)


def dead_pid() -> int:
    """The pid of a child that has ended and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


class TestIdentity:
    def test_a_child_names_itself_as_its_parent_sees_it(self, child: Child) -> None:
        me = this_process()
        assert child.fields["owner"] == f"{HOST}:{child.pid}"
        assert child.fields["owner_machine"] == me.machine == machine_id()
        start = process_start(child.pid)
        assert start is not None and child.fields["owner_start"] is not None
        assert abs(start - child.fields["owner_start"]) <= START_TOLERANCE_MS
        # Milliseconds since the Unix epoch: after this test process, before now.
        assert me.start is not None
        assert me.start <= child.fields["owner_start"] <= datetime.now(UTC).timestamp() * 1000

    def test_local_pid(self, child: Child) -> None:
        now = datetime.now(UTC)
        assert local_pid(running(now, **child.fields)) == child.pid
        other = running(now, **{**child.fields, "owner_machine": OTHER_MACHINE})
        assert local_pid(other) is None  # same host name, another machine: not ours to ask
        legacy = running(now, owner=f"{HOST}:{child.pid}")
        assert local_pid(legacy) == child.pid  # no machine id: the host name decides
        for owner in (None, "", "x", f"{HOST}:", f"{HOST}:abc", f"{HOST}:\u00b2", f"{HOST}:0"):
            assert local_pid(running(now, owner=owner)) is None, owner
        assert local_pid(running(now, owner=f"elsewhere:{child.pid}")) is None

    def test_an_odd_owner_does_not_break_maintenance(self, tmp_path: Path) -> None:
        """``"²".isdigit()`` is true and ``int("²")`` raises (before: at every queue start)."""
        folder = tmp_path / "s"
        store = StatusStore(folder)
        with BatchQueue(status_dir=folder, heartbeat_timeout=60) as queue:
            beat = queue._clock()
            store.update("odd", status="running", owner=f"{HOST}:\u00b2", heartbeat_at=beat)
            wait_until(lambda: "odd" in queue.snapshot())
            assert queue.maintain(now=beat + timedelta(seconds=30)).died == ()
            assert queue.maintain(now=beat + timedelta(seconds=61)).died == ("odd",)


class TestSameMachine:
    def test_a_killed_child_is_not_alive(self, child: Child) -> None:
        now = datetime.now(UTC)
        job = running(now, **child.fields)
        assert alive(job, now)
        child.proc.kill()
        # Not yet reaped (a zombie on POSIX): already not alive.
        wait_until(lambda: not alive(job, now), 30, "the killed child to be seen as gone")
        child.kill()
        assert not alive(job, now)

    def test_a_live_pid_with_another_start_time_was_reused(self, child: Child) -> None:
        now = datetime.now(UTC)
        start = child.fields["owner_start"]
        assert alive(running(now, **{**child.fields, "owner_start": start + 500}), now)
        for off in (-3_600_000, -(START_TOLERANCE_MS + 1000), START_TOLERANCE_MS + 1000):
            job = running(now, **{**child.fields, "owner_start": start + off})
            assert not alive(job, now), off  # heartbeat fresh, yet the pid is another process's

    def test_a_process_hidden_from_proc_still_counts_as_alive(
        self, child: Child, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Mock: Linux's hidepid (other users' processes missing from /proc) is a mount
        option of the one /proc of the machine, so psutil's NoSuchProcess for a live pid
        is injected instead of remounting it."""
        now = datetime.now(UTC)
        job = running(now, **child.fields)

        def hidden(pid: int) -> psutil.Process:
            raise psutil.NoSuchProcess(pid)

        # This process' identity is memoised: taken under the mock it would stay
        # without a start for the tests that run after this one.
        this_process()
        monkeypatch.setattr(psutil, "Process", hidden)
        assert alive(job, now)  # the kernel still says it runs; its start is unknown
        child.kill()
        assert not alive(job, now)

    def test_this_process_with_another_start_time_was_reused(self) -> None:
        now = datetime.now(UTC)
        me = this_process()
        assert me.start is not None
        assert alive(running(now, **me.fields()), now)
        assert not alive(running(now, **{**me.fields(), "owner_start": me.start - 60_000}), now)


class TestOtherMachine:
    def test_same_host_name_and_a_live_pid_is_judged_by_heartbeat(self, child: Child) -> None:
        now = datetime.now(UTC)
        fields = {**child.fields, "owner_machine": OTHER_MACHINE}
        assert alive(running(now, **fields), now)
        stale = running(now - timedelta(seconds=TIMEOUT + 1), **fields)
        assert not alive(stale, now)  # the live pid here is not that owner

    def test_same_host_name_and_a_dead_pid_is_judged_by_heartbeat(self) -> None:
        now = datetime.now(UTC)
        fields = {"owner": f"{HOST}:{dead_pid()}", "owner_start": 1, "owner_machine": OTHER_MACHINE}
        assert alive(running(now, **fields), now)  # its pid is not ours to ask
        assert not alive(running(now - timedelta(seconds=TIMEOUT + 1), **fields), now)

    def test_queue_fails_it_by_heartbeat_not_by_pid(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        store = StatusStore(folder)
        owner = {"owner": f"{HOST}:{dead_pid()}", "owner_start": 1, "owner_machine": OTHER_MACHINE}
        with BatchQueue(status_dir=folder, heartbeat_timeout=60) as queue:
            beat = queue._clock()
            store.update("twin", status="running", heartbeat_at=beat, **owner)
            wait_until(lambda: "twin" in queue.snapshot())
            assert queue.maintain(now=beat + timedelta(seconds=30)).died == ()
            assert queue.maintain(now=beat + timedelta(seconds=61)).died == ("twin",)

    def test_a_pending_job_of_another_machine_waits_pending_timeout(self, tmp_path: Path) -> None:
        """Its submitter cannot be asked: it is abandoned after ``pending_timeout``, not before.

        (Before: a year-old pending job of another host raised OverflowError; then,
        judged with no timeout, it stayed pending forever, also after a reboot.)
        """
        folder = tmp_path / "s"
        store = StatusStore(folder)
        store.update("queued-elsewhere", owner="other-host:4242", owner_machine=OTHER_MACHINE)
        with BatchQueue(status_dir=folder, pending_timeout=3600) as queue:
            wait_until(lambda: "queued-elsewhere" in queue.snapshot())
            report = queue.maintain(now=queue._clock() + timedelta(minutes=59))
            assert report.abandoned == ()
            report = queue.maintain(now=queue._clock() + timedelta(days=365))
            assert report.abandoned == ("queued-elsewhere",)
        job = store.read("queued-elsewhere")
        assert job is not None and job.status is BatchStatus.FAILED
        assert "abandoned" in (job.error_message or "")


class TestOldRecords:
    """Records without owner_machine: written before it existed, or by other programs."""

    OLD_TICKS = 123_456  # owner_start's former unit: Linux clock ticks since boot

    def test_a_live_owner_is_not_taken_for_a_reused_pid(self, child: Child) -> None:
        now = datetime.now(UTC)
        old = running(now, owner=f"{HOST}:{child.pid}", owner_start=self.OLD_TICKS)
        assert alive(old, now)  # the old unit is never compared with milliseconds

    def test_a_dead_pid_on_this_host_is_dead(self) -> None:
        now = datetime.now(UTC)
        old = running(now, owner=f"{HOST}:{dead_pid()}", owner_start=self.OLD_TICKS)
        assert not alive(old, now)

    def test_a_live_pid_with_a_stale_heartbeat_is_dead(self, child: Child) -> None:
        """The pid may have been reused, and the old start time cannot tell: the heartbeat does."""
        stale = datetime.now(UTC) - timedelta(seconds=TIMEOUT + 1)
        old = running(stale, owner=f"{HOST}:{child.pid}")
        assert not alive(old, stale + timedelta(seconds=TIMEOUT + 1))
        assert alive(old, stale + timedelta(seconds=TIMEOUT - 1))

    def test_other_hosts_by_heartbeat(self) -> None:
        now = datetime.now(UTC)
        old = running(now, owner=f"other-{HOST}:{dead_pid()}", owner_start=self.OLD_TICKS)
        assert alive(old, now)
        assert not alive(old, now + timedelta(seconds=TIMEOUT + 1))

    def test_an_old_file_is_read_and_judged(self, tmp_path: Path, child: Child) -> None:
        """A schema-1 file as statusbridge wrote it before owner_machine, worker still running."""
        folder = tmp_path / "s"
        folder.mkdir()
        now = datetime.now(UTC)
        doc = {
            "schema": 1, "id": "old", "status": "running", "params": None, "result": None,
            "error_message": None, "progress": 0.5, "message": "", "batch_id": None, "meta": {},
            "created_at": now.isoformat(), "started_at": now.isoformat(), "completed_at": None,
            "updated_at": now.isoformat(), "seq": 3, "owner": f"{HOST}:{child.pid}",
            "owner_start": self.OLD_TICKS, "cancel_requested": False,
            "heartbeat_at": now.isoformat(),
        }  # fmt: skip
        (folder / "old.json").write_text(json.dumps(doc))
        with BatchQueue(status_dir=folder) as queue:
            job = queue.store.read("old")
            assert job is not None and job.owner_machine is None
            assert queue.maintain(now=now + timedelta(seconds=1)).died == ()
            child.kill()
            assert queue.maintain(now=now + timedelta(seconds=2)).died == ("old",)
