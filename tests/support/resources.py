"""What this process holds (threads, descriptors, inotify watches) and what writers leave behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def process_resources() -> tuple[int, int, int]:
    """(threads, open descriptors, inotify watches) of this process, from Linux's /proc."""
    if not os.path.isdir("/proc/self/fdinfo"):
        pytest.skip("counting descriptors and inotify watches needs Linux /proc")
    fds = os.listdir("/proc/self/fd")
    watches = 0
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as info:
                watches += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:  # closed meanwhile (or the listing's own descriptor)
            continue
    return threading.active_count(), len(fds), watches


def no_more_than(before: tuple[int, ...]) -> Callable[[], bool]:
    """Condition: every count of process_resources() is back at (or below) ``before``."""
    return lambda: all(now <= then for now, then in zip(process_resources(), before, strict=True))


def temp_files(folder: Path) -> list[str]:
    """Writers' temp files, in the folder (other writers) or its hidden .tmp/ (StatusStore)."""
    found = []
    for where in (folder, folder / ".tmp"):
        if where.is_dir():
            found += [
                n
                for n in os.listdir(where)
                if n.startswith(".") and n.endswith(".tmp") and (where / n).is_file()
            ]
    return sorted(found)
