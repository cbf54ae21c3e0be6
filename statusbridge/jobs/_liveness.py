"""Is the process that owns a job still alive?

Same host: the pid must exist *and* be the same process, since pids are reused;
on Linux the start time in /proc/<pid>/stat tells them apart. Other hosts
cannot be asked, so their jobs are judged by heartbeat age instead.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from datetime import datetime, timedelta

from statusbridge.record import BatchJob

__all__ = ["HOST", "OwnerIdentity", "is_owner_alive", "process_start", "this_process"]

logger = logging.getLogger(__name__)

HOST = socket.gethostname()


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None if unknown or gone."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        logger.debug("cannot read /proc/%d/stat: %s", pid, exc)
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[19])  # field 22 overall: starttime


class OwnerIdentity:
    """``host:pid`` plus start time, computed once per process (and again after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.owner = f"{HOST}:{self.pid}"
        self.start = process_start(self.pid)


_identity: OwnerIdentity | None = None


def this_process() -> OwnerIdentity:
    global _identity  # noqa: PLW0603 - a per-process memo, reset on fork by the pid check
    if _identity is None or _identity.pid != os.getpid():
        _identity = OwnerIdentity()
    return _identity


def _pid_exists(pid: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - no way to probe cheaply without psutil
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def is_owner_alive(job: BatchJob, *, now: datetime, heartbeat_timeout: float) -> bool:
    """False if the job's owner is known to be gone (dead pid, reused pid, or stale heartbeat)."""
    owner = job.owner
    if not owner or ":" not in owner:
        return True  # not written by a statusbridge worker: nothing to judge by
    host, _, pid_text = owner.rpartition(":")
    if host == HOST and pid_text.isdigit():
        pid = int(pid_text)
        if not _pid_exists(pid):
            return False
        if job.owner_start is not None:
            start = process_start(pid)
            if start is not None and start != job.owner_start:
                return False  # the pid now belongs to another process
        return True
    beat = job.heartbeat_at or job.updated_at
    return beat is None or now - beat <= timedelta(seconds=heartbeat_timeout)
