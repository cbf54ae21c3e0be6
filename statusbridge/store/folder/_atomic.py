"""Write a file so that readers see the old content or the new, never a part.

Temp file on the same file system (so the rename is atomic), full write,
optional fsync, then ``os.replace``. Opening the target with mode "w" would
truncate it before any lock is taken: the classic torn read. StatusStore puts
its temp files in the folder's hidden ``.tmp/`` (see ``write_atomic``); that
folder is opened with O_NOFOLLOW and the temp file is created and renamed
relative to its descriptor, so nothing is ever written through a symlink.
On Windows the rename waits (up to ~1 s) while a reader holds the record open.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import sys
import time
from pathlib import Path

from statusbridge.errors import UnsafeFolderError
from statusbridge.store._files import TEMP_SUFFIX, FileSignature, signature_of

__all__ = [
    "TEMP_SUFFIX",
    "fsync_directory",
    "open_temp_dir",
    "temp_name",
    "with_path",
    "write_atomic",
]

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
    """A dot-file name (readers never take it for a record) unique to this process and call.

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


# Create and rename relative to a directory descriptor where the platform can.
_DIR_FDS = (
    os.open in os.supports_dir_fd
    and os.rename in os.supports_dir_fd  # os.replace takes the same src_dir_fd (renameat)
    and os.unlink in os.supports_dir_fd
    and hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_SHARED_BITS = 0o022  # a dir_mode with these was widened on purpose for several users


def open_temp_dir(temp_dir: Path, *, dir_mode: int = 0o700) -> int | None:
    """Open ``temp_dir`` for creating temp files in it, never through a symlink.

    Creates it (and its parent) with ``dir_mode`` if missing. A symlink in its
    place is removed and a real folder made instead; anything else that is not a
    folder, or a folder owned by another user (neither us nor the parent's owner;
    any owner when ``dir_mode`` shares the folder), raises UnsafeFolderError.
    Returns a directory descriptor to create and rename relative to (the caller
    closes it), or None where the platform has no ``dir_fd`` (checked with lstat).
    """
    for _ in range(3):  # a folder that changes under us twice in a row is refused below
        try:
            if not _DIR_FDS:
                st = os.lstat(temp_dir)
                if not stat.S_ISDIR(st.st_mode):
                    _remove_symlink_or_refuse(temp_dir)
                    continue
                return None
            fd = os.open(temp_dir, _DIR_FLAGS | os.O_NOFOLLOW)
        except FileNotFoundError:
            _make_dir(temp_dir, dir_mode)
            continue
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            _remove_symlink_or_refuse(temp_dir, exc)
            continue
        try:
            _check_owner(fd, temp_dir, dir_mode)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise UnsafeFolderError(f"{temp_dir} keeps changing while statusbridge opens it", temp_dir)


def _make_dir(path: Path, dir_mode: int) -> None:
    try:
        os.mkdir(path, dir_mode)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        _make_dir(path, dir_mode)
    except FileExistsError:
        # Not an error: another writer made it first; the caller checks it like any other.
        return


def _remove_symlink_or_refuse(path: Path, error: OSError | None = None) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # gone meanwhile: it is made afresh
    except OSError:
        if error is not None:
            raise error from None  # e.g. the status folder itself is not a folder
        raise
    if stat.S_ISDIR(st.st_mode):
        return  # a real folder again: check it like any other
    if not stat.S_ISLNK(st.st_mode):
        raise UnsafeFolderError(
            f"{path} is not a folder; statusbridge keeps its temp files in a folder of "
            "that name: remove it",
            path,
        )
    try:
        target = os.readlink(path)
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnsafeFolderError(
            f"{path} is a symbolic link, which statusbridge never writes through, and it "
            f"cannot be removed ({exc.strerror or exc}): remove it",
            path,
        ) from exc
    logger.warning(
        "statusbridge: %s was a symbolic link (to %s); replaced it by a folder", path, target
    )


def _check_owner(fd: int, path: Path, dir_mode: int) -> None:
    if not hasattr(os, "geteuid"):
        return  # Windows: ownership is not a uid
    owner, me = os.fstat(fd).st_uid, os.geteuid()
    if owner == me or dir_mode & _SHARED_BITS:
        return
    folder_owner = os.stat(path.parent).st_uid
    if owner == folder_owner:
        return
    raise UnsafeFolderError(
        f"{path} belongs to uid {owner}, neither to this user (uid {me}) nor to the owner "
        f"of the status folder (uid {folder_owner}); statusbridge does not write its temp "
        "files there: remove it (it is made again), or share the folder on purpose with "
        "StatusStore(dir_mode=0o770)",
        path,
    )


def write_atomic(
    target: Path,
    data: bytes,
    *,
    durable: bool = False,
    file_mode: int = 0o600,
    temp_dir: Path | None = None,
    dir_mode: int = 0o700,
    exclusive: bool = False,
) -> FileSignature:
    """Atomically replace ``target`` with ``data``; return the new file's signature.

    ``exclusive=True`` creates ``target`` complete or not at all, and raises
    FileExistsError instead of replacing an existing file (``link``, which
    refuses an existing name, instead of ``replace``).

    ``temp_dir`` (default: the target's folder) must be on the same file system;
    it is opened with ``open_temp_dir`` (made if missing, never followed if a
    symlink). A temp folder *inside* a watched folder makes the rename reach the
    watch as a lone IN_MOVED_TO: with the temp file beside the target, inotify
    reports a MOVED_FROM/MOVED_TO pair, and watchdog's pairing queue can stall
    every event behind it for 0.5 s (watchdog issue #649).
    """
    if temp_dir is None:
        return _write_via(
            None,
            target.parent,
            target,
            data,
            durable=durable,
            file_mode=file_mode,
            dir_mode=dir_mode,
            exclusive=exclusive,
        )
    for attempt in range(2):
        dir_fd = open_temp_dir(temp_dir, dir_mode=dir_mode)
        try:
            return _write_via(
                dir_fd,
                temp_dir,
                target,
                data,
                durable=durable,
                file_mode=file_mode,
                dir_mode=dir_mode,
                exclusive=exclusive,
            )
        except FileNotFoundError as exc:
            # The temp folder was removed after it was opened: once more, from the start.
            in_temp_dir = str(exc.filename).startswith(f"{temp_dir}{os.sep}")
            if dir_fd is None or attempt or not in_temp_dir:
                raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
    raise AssertionError("unreachable")  # pragma: no cover


def _write_via(
    dir_fd: int | None,
    folder: Path,
    target: Path,
    data: bytes,
    *,
    durable: bool,
    file_mode: int,
    dir_mode: int,
    exclusive: bool = False,
) -> FileSignature:
    """Write through a temp file in ``folder`` (given by ``dir_fd`` when not None)."""
    stem = target.name.rsplit(".", 1)[0]

    def at(name: str) -> str | Path:
        return name if dir_fd is not None else folder / name

    name = temp_name(stem)
    try:
        try:
            fd = os.open(at(name), _CREATE_FLAGS, file_mode, dir_fd=dir_fd)
        except FileNotFoundError:
            if dir_fd is not None:
                raise
            folder.mkdir(parents=True, exist_ok=True, mode=dir_mode)
            fd = os.open(at(name), _CREATE_FLAGS, file_mode, dir_fd=dir_fd)
        except FileExistsError:
            name = temp_name(stem)  # a stale file from a dead namesake
            fd = os.open(at(name), _CREATE_FLAGS, file_mode, dir_fd=dir_fd)
    except OSError as exc:
        # Name the file with its folder (relative to a descriptor, it names only itself).
        raise with_path(exc, folder / name) from None
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
        if exclusive:
            os.link(at(name), target, src_dir_fd=dir_fd)
            _discard(at(name), dir_fd, folder)
        else:
            _replace(at(name), target, src_dir_fd=dir_fd)
    except OSError as exc:
        _discard(at(name), dir_fd, folder)
        if exc.filename is None or dir_fd is not None:
            raise with_path(exc, target) from exc
        raise
    except BaseException:
        _discard(at(name), dir_fd, folder)
        raise
    if durable:
        fsync_directory(target.parent)
    return sig


_IS_WINDOWS = sys.platform == "win32"
_WINDOWS_SHARING_ERRORS = frozenset({5, 32})  # ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION
_WINDOWS_REPLACE_DELAYS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.25, 0.45)  # ~1 s in all


def _replace(src: str | Path, dst: Path, *, src_dir_fd: int | None) -> None:
    if _IS_WINDOWS:
        _replace_on_windows(src, dst, src_dir_fd=src_dir_fd)
    else:
        os.replace(src, dst, src_dir_fd=src_dir_fd)


def _replace_on_windows(src: str | Path, dst: Path, *, src_dir_fd: int | None) -> None:
    """``os.replace``, waiting (up to ~1 s) while a reader holds ``dst`` open.

    Windows refuses to replace a file that is open without FILE_SHARE_DELETE, as
    every file Python opens is (ERROR_ACCESS_DENIED or ERROR_SHARING_VIOLATION),
    and a cache or another program reads a record for well under a millisecond.
    """
    for attempt, delay in enumerate(_WINDOWS_REPLACE_DELAYS, 1):
        try:
            os.replace(src, dst, src_dir_fd=src_dir_fd)
        except PermissionError as exc:
            if getattr(exc, "winerror", None) not in _WINDOWS_SHARING_ERRORS:
                raise
            logger.debug("%s is open elsewhere (try %d): %s; retrying", dst, attempt, exc)
        else:
            return
        time.sleep(delay)
    os.replace(src, dst, src_dir_fd=src_dir_fd)  # the last try: its error is the caller's


def _discard(tmp: str | Path, dir_fd: int | None, folder: Path) -> None:
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        return  # not an error: already gone, which is all we wanted
    except OSError:
        # Left behind; StatusStore removes stale temp files (at its first write).
        logger.warning("could not remove temp file %s", folder / tmp, exc_info=True)
