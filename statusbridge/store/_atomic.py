"""Write a file so that readers see the old content or the new, never a part.

Temp file in the same folder (same file system, so the rename is atomic), full
write, optional fsync, then ``os.replace``. Opening the target with mode "w"
would truncate it before any lock is taken: the classic torn read.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

from statusbridge.store._files import TEMP_SUFFIX, FileSignature, signature_of

__all__ = ["TEMP_SUFFIX", "fsync_directory", "temp_name", "with_path", "write_atomic"]

logger = logging.getLogger(__name__)

_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


_counter = itertools.count()


def temp_name(stem: str) -> str:
    """A dot-file (so readers ignore it) unique to this process and call.

    pid + a process-wide counter, not random bytes: os.urandom costs ~80 us per
    call on some VMs, more than the rest of the name. O_EXCL still guards
    against a clash (a pid reused after a crash left a temp file behind).
    """
    return f".{stem}.{os.getpid()}-{next(_counter)}{TEMP_SUFFIX}"


def with_path(exc: OSError, path: Path) -> OSError:
    """The same kind of OSError, naming ``path`` (ENOSPC from write() names nothing)."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows has no directory fsync)."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    target: Path,
    data: bytes,
    *,
    durable: bool = False,
    file_mode: int = 0o600,
    temp_dir: Path | None = None,
    dir_mode: int = 0o700,
) -> FileSignature:
    """Atomically replace ``target`` with ``data``; return the new file's signature.

    ``temp_dir`` (default: the target's folder) must be on the same file system.
    A temp folder *inside* a watched folder makes the rename reach the watch as a
    lone IN_MOVED_TO: with the temp file beside the target, inotify reports a
    MOVED_FROM/MOVED_TO pair, and watchdog's pairing queue can stall every event
    behind it for 0.5 s (watchdog issue #649).
    """
    stem = target.name.rsplit(".", 1)[0]
    folder = temp_dir if temp_dir is not None else target.parent
    tmp = folder / temp_name(stem)
    try:
        fd = os.open(tmp, _CREATE_FLAGS, file_mode)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        fd = os.open(tmp, _CREATE_FLAGS, file_mode)
    except FileExistsError:
        tmp = folder / temp_name(stem)  # a stale file from a dead namesake
        fd = os.open(tmp, _CREATE_FLAGS, file_mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
            sig = signature_of(os.fstat(fd))
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        if exc.filename is None:
            raise with_path(exc, target) from exc
        raise
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        fsync_directory(target.parent)
    return sig


def _discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError:
        # Left behind; StatusStore removes stale temp files on start.
        logger.warning("could not remove temp file %s", tmp, exc_info=True)
