"""``statusbridge doctor``: is this folder healthy, and is this machine fit to watch it?"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from statusbridge.cache import StatusCache
from statusbridge.display import backend_text
from statusbridge.errors import BackendUnavailable
from statusbridge.jobs._liveness import is_owner_alive
from statusbridge.record import BatchStatus
from statusbridge.record._model import utc_now
from statusbridge.store._files import sweep_temp_files
from statusbridge.store._location import is_url
from statusbridge.store.folder._locks import STRIPES

__all__ = ["Finding", "diagnose"]

INOTIFY = Path("/proc/sys/fs/inotify")


@dataclass
class Finding:
    ok: bool
    title: str
    details: list[str] = field(default_factory=list)


def diagnose(folder: Path | str, *, heartbeat_timeout: float = 60.0) -> list[Finding]:
    """Findings on a status folder, or on a server location (a URL: its folder checks skipped)."""
    findings: list[Finding] = []
    server = is_url(folder)
    if isinstance(folder, Path):
        if not folder.exists():
            return [Finding(False, f"folder {folder} does not exist")]
        if not folder.is_dir():
            return [Finding(False, f"{folder} is not a folder")]
        findings.append(_writable(folder))
    try:
        cache = StatusCache(folder)
    except BackendUnavailable as exc:
        return [Finding(False, str(exc))]
    try:
        health = cache.health()
        snap = cache.snapshot()
    finally:
        cache.close()
    backend_ok = health.backend != "none"
    findings.append(
        Finding(
            backend_ok,
            f"{'change feed' if server else 'file-system events'}: {health.backend} backend",
            ([health.backend_note] if health.backend_note else [])
            if backend_ok
            else [health.last_error or "no observer"],
        )
    )
    if not server and sys.platform.startswith("linux") and INOTIFY.is_dir():
        limits = {}
        for name in ("max_user_watches", "max_user_instances", "max_queued_events"):
            try:
                limits[name] = (INOTIFY / name).read_text().strip()
            except OSError as exc:
                limits[name] = f"unreadable ({exc.strerror})"
        findings.append(Finding(True, "inotify limits", [f"{k} = {v}" for k, v in limits.items()]))
    invalid = dict(health.invalid_files)
    findings.append(
        Finding(
            not invalid,
            f"{len(invalid)} {backend_text(str(folder)).unreadable}",
            [f"{name}: {reason}" for name, reason in sorted(invalid.items())],
        )
    )
    if health.vanished_records:
        findings.append(
            Finding(
                False,
                f"{health.vanished_records} record(s) vanished without a delete (evicted:"
                " set the server's maxmemory-policy to noeviction)",
                list(health.vanished_ids),
            )
        )
    if health.clock_skew:
        findings.append(Finding(False, health.clock_skew))
    if isinstance(folder, Path):
        findings.append(_leftovers(folder))
    now = utc_now()
    dead = [
        job
        for job in snap.values()
        if job.status is BatchStatus.RUNNING
        and not is_owner_alive(job, now=now, heartbeat_timeout=heartbeat_timeout)
    ]
    findings.append(
        Finding(
            not dead,
            f"{len(dead)} running job(s) whose worker is gone",
            [f"{j.id} (owner {j.owner})" for j in dead]
            + (["a BatchQueue or BatchManager on this folder marks them FAILED"] if dead else []),
        )
    )
    findings.append(Finding(True, f"{len(snap)} valid job record(s)"))
    return findings


def _writable(folder: Path) -> Finding:
    # Asked, not tried: doctor is a read command and writes nothing (a read-only
    # monitor may run it). Not a fault either way: watching needs no write access.
    if os.access(folder, os.W_OK | os.X_OK):
        return Finding(True, "folder exists and is writable")
    return Finding(
        True,
        "folder exists, read-only for this user",
        ["fine for watching; workers writing status need write access"],
    )


def _leftovers(folder: Path) -> Finding:
    locks = [n for n in os.listdir(folder) if n.startswith(".lock-")]
    # The store's own sweep, looking only: StatusStore writes its temp files in .tmp/,
    # other writers may leave theirs beside the records.
    sweep = sweep_temp_files(folder)
    stale = sweep.stale
    details = [
        f"stale temp file {n} (a writer died mid-write; StatusStore removes it)"
        for n in sorted(stale)
    ]
    details += sweep.problems
    if len(locks) > STRIPES:
        details.append(f"{len(locks)} lock files, expected at most {STRIPES}")
    # Not a fault in itself (a read-only monitor may not see into .tmp/), but said.
    notes = [f"not checked: {place}" for place in sweep.unchecked]
    return Finding(
        not details, f"{len(locks)} lock file(s), {len(stale)} stale temp file(s)", details + notes
    )
