"""Is the process that owns a job still alive?

A record names its owner three ways:

- ``owner``: ``host:pid``, for people (and all that other programs may write);
- ``owner_machine``: an opaque id of where that pid means something: the
  installation, its current boot and, on Linux, the pid namespace (two containers
  or cloned VMs with one host name differ here; see ``machine_id``);
- ``owner_start``: when the owner process started, in milliseconds, which tells a
  reused pid from the original: since boot on Linux (clock ticks, which no clock
  step moves), since the Unix epoch elsewhere (psutil's ``create_time``). It is
  only compared within one ``owner_machine``, so the two units never meet.

Owner on this machine (the same ``owner_machine``): alive while its pid exists, is
not a zombie, and started within ``START_TOLERANCE_MS`` of ``owner_start``. Owners
elsewhere cannot be asked: they are judged by the age of their heartbeat, counted
from when *this* process saw it change (``Sightings``, on its own monotonic clock),
never from the writer's ``heartbeat_at``: a worker whose clock runs five minutes
behind would look dead the moment it started.

Records without ``owner_machine`` (written before it existed, or by another
program) are placed by host name, as before, but their ``owner_start`` is never
compared: it was in another unit then (Linux clock ticks since boot). Such an
owner on this host is gone when its pid is; while the pid exists, the heartbeat
decides, so a reused pid is still caught once the heartbeat is stale.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

import psutil

from statusbridge.cache import Snapshot
from statusbridge.record import BatchJob
from statusbridge.record._model import utc_now

__all__ = [
    "HOST",
    "START_TOLERANCE_MS",
    "LocalClock",
    "OwnerIdentity",
    "Sightings",
    "is_owner_alive",
    "local_pid",
    "machine_id",
    "process_start",
    "this_process",
]

logger = logging.getLogger(__name__)

HOST = socket.gethostname()

_IS_LINUX = sys.platform.startswith("linux")
_IS_WINDOWS = sys.platform == "win32"

START_TOLERANCE_MS = 2000
"""How far a pid's start may be from ``owner_start`` and still be the same process.

Start times outside Linux come from psutil in wall-clock terms, rounded; Linux's
ticks since boot are exact.
"""


def process_start(pid: int) -> int | None:
    """Start of ``pid`` in ms (since boot on Linux, else since the epoch); None if unknown."""
    return _probe(pid)[1]


_IS_LINUX = sys.platform.startswith("linux")


def _linux_start_ms(pid: int) -> int | None:
    """Milliseconds from boot to the start of ``pid``, from /proc/<pid>/stat.

    Not psutil's ``create_time``: Linux derives that from the boot time in
    wall-clock terms, which moves with every clock step or NTP correction, so a
    live worker could look like a reused pid to another process. Ticks since
    boot never move, and ``owner_machine`` names the boot.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[19]) * 1000 // _CLOCK_TICKS  # field 22: starttime, in clock ticks


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _probe(pid: int) -> tuple[bool, int | None]:
    """(does ``pid`` run, its start in ms as ``process_start`` gives it, or None)."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        # Not in /proc, yet it may run: Linux's hidepid hides other users' processes.
        # pid_exists asks the kernel (kill(pid, 0) on POSIX), which still answers.
        return psutil.pid_exists(pid), None
    except psutil.AccessDenied:
        return True, None
    start: int | None = None
    try:
        start = _linux_start_ms(pid) if _IS_LINUX else round(proc.create_time() * 1000)
    except psutil.NoSuchProcess:  # ZombieProcess is one
        return False, None
    except psutil.AccessDenied:
        logger.debug("start time of pid %d not readable (access denied)", pid)
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, start  # it has ended; only its exit status waits for its parent
    except psutil.NoSuchProcess:
        return False, None
    except psutil.AccessDenied:
        logger.debug("state of pid %d not readable (access denied)", pid)
    return True, start


# -- where a pid means something ----------------------------------------------------------------

_LINUX_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_LINUX_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_LINUX_PID_NAMESPACE = "/proc/self/ns/pid"


def machine_id() -> str:
    """16 hex digits naming this installation, its boot and (Linux) this pid namespace.

    What each OS can tell cheaply, without starting a program:
    Linux: ``/etc/machine-id`` (containers of one image may share it), the kernel's
    boot id, and the pid namespace (which tells those containers apart);
    Windows: the installation's ``MachineGuid``; macOS and others: the boot time,
    which their kernels keep fixed. Reboots are harmless either way: a pid from
    before one is gone, or belongs to a process that started later.
    """
    parts = (_installation_id(), _boot_id(), _pid_namespace())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _installation_id() -> str:
    if _IS_LINUX:
        return _first_line(*_LINUX_MACHINE_ID_FILES)
    if _IS_WINDOWS:
        return _windows_machine_guid()
    return ""  # macOS, BSD: not without a subprocess (ioreg); the boot time stands in


def _boot_id() -> str:
    if _IS_LINUX:
        return _first_line(_LINUX_BOOT_ID_FILE)
    if _IS_WINDOWS and _windows_machine_guid():
        return ""  # psutil derives Windows' boot time from the uptime: it jitters by process
    return str(round(psutil.boot_time()))  # macOS, BSD: the kernel's fixed boot time


def _pid_namespace() -> str:
    if not _IS_LINUX:
        return ""
    try:
        return os.readlink(_LINUX_PID_NAMESPACE)  # e.g. "pid:[4026531836]"
    except OSError as exc:
        logger.debug("cannot read %s: %s", _LINUX_PID_NAMESPACE, exc)
        return ""


def _windows_machine_guid() -> str:
    if sys.platform != "win32":
        return ""
    import winreg

    try:
        with winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE,
            r"SOFTWARE\Microsoft\Cryptography",
            0,
            winreg.KEY_READ | winreg.KEY_WOW64_64KEY,
        ) as key:
            value, _ = winreg.QueryValueEx(key, "MachineGuid")
    except OSError as exc:
        logger.debug("cannot read the MachineGuid: %s", exc)
        return ""
    return str(value)


def _first_line(*paths: str) -> str:
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                line = f.readline().strip()
        except OSError as exc:
            logger.debug("cannot read %s: %s", path, exc)
            continue
        if line:
            return line
    return ""


# -- this process -------------------------------------------------------------------------------


class OwnerIdentity:
    """This process as a record names it; computed once per process (and again after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.owner = f"{HOST}:{self.pid}"
        self.start = process_start(self.pid)
        self.machine = machine_id()

    def fields(self) -> dict[str, str | int | None]:
        """The record fields that name this process as a job's owner."""
        return {"owner": self.owner, "owner_start": self.start, "owner_machine": self.machine}


_identity: OwnerIdentity | None = None


def this_process() -> OwnerIdentity:
    global _identity  # noqa: PLW0603 - a per-process memo, reset on fork by the pid check
    if _identity is None or _identity.pid != os.getpid():
        _identity = OwnerIdentity()
    return _identity


# -- judging a record ---------------------------------------------------------------------------


def local_pid(job: BatchJob) -> int | None:
    """The owner's pid if it runs where this process runs (same machine, boot, namespace).

    None when the owner is elsewhere, unknown, or not a ``host:pid``. Decided by
    ``owner_machine``; for records without it, by host name.
    """
    owner = job.owner
    if not owner:
        return None
    host, sep, pid_text = owner.rpartition(":")
    if not sep or not (pid_text.isascii() and pid_text.isdigit()):
        return None
    pid = int(pid_text)
    if pid <= 0:
        return None
    if job.owner_machine is not None:
        return pid if job.owner_machine == this_process().machine else None
    return pid if host == HOST else None


class LocalClock:
    """This process's clocks, for "how long since we saw it": never a writer's clock.

    Ages run on the monotonic clock, which no wall-clock step moves. A ``now`` later
    than ``wall()`` (``BatchQueue.maintain(now=...)`` looking ahead) adds the
    difference, so expiry can be tested without waiting.
    """

    def __init__(
        self,
        wall: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wall = wall
        self.monotonic = monotonic

    def age(self, seen: float, now: datetime) -> float:
        """Seconds from ``seen`` (a ``monotonic()`` reading) to ``now``."""
        ahead = (now - self.wall()).total_seconds()
        return self.monotonic() - seen + max(0.0, ahead)


class Sightings:
    """When this process saw each unfinished job's heartbeat change; fed by ``subscribe``.

    A job's sign of life is its owner and heartbeat (or, without one, its last write).
    One first seen here counts from then: a process that never saw it change gives it
    a whole timeout, rather than trust a timestamp from another host's clock.
    """

    def __init__(self, clock: LocalClock | None = None) -> None:
        self._clock = clock or LocalClock()
        self._seen: dict[str, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def seed(self, snapshot: Snapshot) -> None:
        """Note the unfinished jobs ``snapshot`` holds as seen now."""
        self(snapshot, snapshot.active())

    def __call__(self, snapshot: Snapshot, changed_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in changed_ids:
                job = snapshot.get(job_id)
                if job is None or job.is_finished:
                    self._seen.pop(job_id, None)
                else:
                    self._sighted(job)

    def age(self, job: BatchJob, now: datetime) -> float:
        """Seconds since this process saw ``job``'s heartbeat as it is now, at ``now``."""
        with self._lock:
            return self._clock.age(self._sighted(job), now)

    def _sighted(self, job: BatchJob) -> float:
        beat = (job.owner, job.heartbeat_at or job.updated_at)
        seen = self._seen.get(job.id)
        if seen is None or seen[0] != beat:
            seen = self._seen[job.id] = (beat, self._clock.monotonic())
        return seen[1]


def is_owner_alive(
    job: BatchJob,
    *,
    now: datetime,
    heartbeat_timeout: float,
    sightings: Sightings | None = None,
) -> bool:
    """False if the job's owner is known to be gone (dead pid, reused pid, or stale heartbeat).

    ``heartbeat_timeout`` may be ``math.inf`` (never stale). With ``sightings`` a
    heartbeat's age is how long ago this process saw it change; without (a one-off
    look, as ``doctor`` takes), the writer's ``heartbeat_at`` against ``now``.
    """
    owner = job.owner
    if not owner or ":" not in owner:
        return True  # not written by a statusbridge worker: nothing to judge by
    pid = local_pid(job)
    if pid is None:
        return _heartbeat_fresh(job, now, heartbeat_timeout, sightings)
    me = this_process()
    if pid == me.pid and job.owner_machine == me.machine:
        # Ourselves: our start as read once, so a later clock step cannot estrange us.
        exists, start = True, me.start
    else:
        exists, start = _probe(pid)
    if not exists:
        return False
    if job.owner_machine is None:  # owner_start: unit unknown
        return _heartbeat_fresh(job, now, heartbeat_timeout, sightings)
    if job.owner_start is None or start is None:
        return True
    return abs(start - job.owner_start) <= START_TOLERANCE_MS  # else: the pid was reused


def _heartbeat_fresh(
    job: BatchJob, now: datetime, heartbeat_timeout: float, sightings: Sightings | None
) -> bool:
    if sightings is not None:
        return sightings.age(job, now) <= heartbeat_timeout
    beat = job.heartbeat_at or job.updated_at
    # Seconds as a float: timedelta(seconds=math.inf) raises OverflowError.
    return beat is None or (now - beat).total_seconds() <= heartbeat_timeout
