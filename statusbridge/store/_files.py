"""What lives in a status folder, and how one record file is read safely.

The folder holds ``<job_id>.json`` records, a fixed set of ``.lock-NN`` stripe
files and the hidden ``.tmp/`` sub-folder, where ``.<job_id>.<pid>-<n>.tmp``
files exist only during a write (other programs may put their own dot-named
temp files beside the records instead). Everything starting with a dot is ours
and never a record; anything else that is not ``<valid id>.json`` is foreign
and reported, not read.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
from pathlib import Path
from typing import NamedTuple

from statusbridge.errors import InvalidRecordError
from statusbridge.record import JOB_ID_PATTERN, BatchJob, decode_job

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FOREIGN_REASON",
    "RECORD_SUFFIX",
    "STALE_TEMP_SECONDS",
    "TEMP_DIR",
    "TEMP_SUFFIX",
    "FileSignature",
    "TempSweep",
    "classify_name",
    "read_record_file",
    "signature_of",
    "sweep_temp_files",
    "written_version",
    "unreadable_reason",
]

DEFAULT_MAX_BYTES = 1024 * 1024
RECORD_SUFFIX = ".json"
# Temp files live in a hidden sub-folder (same file system, so the rename stays
# atomic); see write_atomic for why not beside the records.
TEMP_DIR = ".tmp"
TEMP_SUFFIX = ".tmp"
# A temp file this old belongs to a writer that died mid-write.
STALE_TEMP_SECONDS = 60.0
# Reasons given for files that are no valid record (the same words everywhere).
FOREIGN_REASON = "not a status file (expected <job id>.json)"


def unreadable_reason(exc: OSError) -> str:
    """Why a record file could not be read (permissions, I/O error): one file's problem."""
    return f"cannot read: {exc.strerror or exc}"


# O_NOFOLLOW: a symlink planted in the folder is refused by the kernel, with no
# check-then-open race. O_NONBLOCK: a FIFO planted as "x.json" must not hang the
# reader in open(); regular files ignore the flag.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class TempSweep(NamedTuple):
    """What ``sweep_temp_files`` saw; paths are relative to the folder."""

    stale: tuple[str, ...]  # stale temp files found (or removed)
    problems: tuple[str, ...]  # e.g. ".tmp is symbolic link (never followed)", cannot remove
    unchecked: tuple[str, ...] = ()  # places it could not look into, with the reason


# Where the platform has them, the sweep works relative to directory descriptors:
# ``.tmp`` is opened once with O_NOFOLLOW, so a symlink put in its place is never
# listed through, nor anything unlinked behind it.
_DIR_FDS = (
    os.scandir in os.supports_fd
    and os.unlink in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
    and hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def sweep_temp_files(
    folder: str | os.PathLike[str], *, max_age: float = STALE_TEMP_SECONDS, remove: bool = False
) -> TempSweep:
    """Temp files older than ``max_age`` seconds, in ``folder`` and its ``.tmp/``.

    Only regular files named ``.<anything>.tmp`` count (never the ``.tmp`` folder
    itself); a ``.tmp`` that is not a real directory is not looked into. With
    ``remove=True`` they are deleted; one that cannot be is a problem, not stale.
    The one implementation behind ``StatusStore.remove_stale_temp_files`` and
    ``statusbridge doctor``.
    """
    cutoff = time.time() - max_age
    stale: list[str] = []
    problems: list[str] = []
    unchecked: list[str] = []
    top: int | str = os.fspath(folder)
    try:
        if _DIR_FDS:
            top = os.open(os.fspath(folder), _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return TempSweep((), ())
    except OSError as exc:
        return TempSweep((), (), (f"{os.fspath(folder)}: {exc.strerror or exc}",))
    try:
        _sweep(top, "", cutoff, remove=remove, stale=stale, problems=problems)
        inner = _open_temp_dir_for_sweep(top, problems, unchecked)
        if inner is not None:
            try:
                _sweep(inner, f"{TEMP_DIR}/", cutoff, remove=remove, stale=stale, problems=problems)
            finally:
                if isinstance(inner, int):
                    os.close(inner)
    finally:
        if isinstance(top, int):
            os.close(top)
    return TempSweep(tuple(stale), tuple(problems), tuple(unchecked))


def _open_temp_dir_for_sweep(
    top: int | str, problems: list[str], unchecked: list[str]
) -> int | str | None:
    """``.tmp`` as a descriptor (or a path, without dir fds), or None if it is no real folder."""
    path, dir_fd = (TEMP_DIR, top) if isinstance(top, int) else (os.path.join(top, TEMP_DIR), None)
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            problems.append(f"{TEMP_DIR} is {what}; not looked into")
            return None
        if dir_fd is None:
            return path  # no O_NOFOLLOW here (Windows): checked, then listed
        # O_NOFOLLOW: if a symlink replaced it since the stat, this fails (ELOOP/ENOTDIR).
        return os.open(path, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        unchecked.append(f"{TEMP_DIR}/: {exc.strerror or exc}")
        return None


def _sweep(
    where: int | str,
    prefix: str,
    cutoff: float,
    *,
    remove: bool,
    stale: list[str],
    problems: list[str],
) -> None:
    dir_fd = where if isinstance(where, int) else None
    try:
        entries = list(os.scandir(where))
    except OSError as exc:
        problems.append(f"cannot list {prefix or './'}: {exc.strerror or exc}")
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)) or name == TEMP_DIR:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue  # may belong to a writer still at work
            if remove:
                os.unlink(name if dir_fd is not None else entry.path, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"cannot remove stale temp file {prefix}{name}: {exc.strerror or exc}")
            continue
        stale.append(f"{prefix}{name}")


# Cheap identity of a file version (every atomic replace gives a new inode):
# inode, size, mtime and ctime packed in one bytes object, because a cache keeps
# one per record (73 bytes, where a tuple of four ints took about 180).
FileSignature = bytes
_SIGNATURE = struct.Struct("=Qqqq")


def signature_of(st: os.stat_result) -> FileSignature:
    return _SIGNATURE.pack(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def written_version(sig: FileSignature) -> bytes:
    """The part of a signature that the rename installing the file leaves alone.

    A rename updates the inode's ctime, so a writer's fstat of its temp file
    cannot predict the ctime of the installed record; inode, size and mtime it can.
    """
    return sig[: _SIGNATURE.size - 8]


def classify_name(name: str) -> str:
    """'record', 'internal' (ours: temp and lock dot-files) or 'foreign'."""
    if name.startswith("."):
        return "internal"
    if name.endswith(RECORD_SUFFIX) and JOB_ID_PATTERN.fullmatch(name[: -len(RECORD_SUFFIX)]):
        return "record"
    return "foreign"


def describe_non_regular(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link (never followed)"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    return "not a regular file"


def _refused(reason: str, name: str, st: os.stat_result) -> InvalidRecordError:
    exc = InvalidRecordError(reason, source=name)
    exc.signature = signature_of(st)  # the version refused; see read_record_file
    return exc


def read_record_file(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None
) -> tuple[BatchJob, FileSignature]:
    """Read and decode one record file.

    Raises FileNotFoundError if it vanished (a normal race with delete), and
    InvalidRecordError for anything that is not a valid record of the job named
    by the file: symlinks, non-regular files, hard-linked files, oversized
    files and undecodable content. ``name`` is the file's name, if the caller
    has it (a cache's scan: saves working it out of the path for every file).
    """
    if name is None:
        name = os.path.basename(path)
    expected_id = name[: -len(RECORD_SUFFIX)] if name.endswith(RECORD_SUFFIX) else None
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidRecordError("symbolic link (never followed)", source=name) from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise InvalidRecordError("not a regular file", source=name) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refused(describe_non_regular(st), name, st)
        if st.st_nlink > 1:
            # Writers always replace, so a record never has a second name; a hard
            # link means someone linked another file in here.
            raise _refused("file has other hard links", name, st)
        if st.st_size > max_bytes:
            raise _refused(f"{st.st_size} bytes exceeds the {max_bytes}-byte limit", name, st)
        # One read of size+1: a short read of a regular file means end of file, so
        # the usual second read (to see EOF) is only needed if the file grew.
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:
            chunks = [data]
            total = len(data)
            while total <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:
                # The file grew after fstat: not one of our atomic writes.
                raise _refused(f"more than {max_bytes} bytes", name, st)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    sig = signature_of(st)
    try:
        return decode_job(data, source=name, expected_id=expected_id), sig
    except InvalidRecordError as exc:
        # The signature of the very version that was read: a reader that remembers
        # it re-reads the file when it changes, and not before.
        exc.signature = sig
        raise
