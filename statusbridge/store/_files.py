"""What lives in a status folder, and how one record file is read safely.

The folder holds ``<job_id>.json`` records, ``.<job_id>.<pid>-<rand>.tmp`` files
that exist only during a write, and a fixed set of ``.lock-NN`` stripe files.
Everything starting with a dot is ours and never a record; anything else that is
not ``<valid id>.json`` is foreign and reported, not read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

from statusbridge.errors import InvalidRecordError
from statusbridge.record import JOB_ID_PATTERN, BatchJob, decode_job

__all__ = [
    "DEFAULT_MAX_BYTES",
    "RECORD_SUFFIX",
    "FileSignature",
    "classify_name",
    "read_record_file",
    "signature_of",
]

DEFAULT_MAX_BYTES = 1024 * 1024
RECORD_SUFFIX = ".json"

# O_NOFOLLOW: a symlink planted in the folder is refused by the kernel, with no
# check-then-open race. O_NONBLOCK: a FIFO planted as "x.json" must not hang the
# reader in open(); regular files ignore the flag.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class FileSignature(NamedTuple):
    """Cheap identity of a file version: every atomic replace gives a new inode."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def signature_of(st: os.stat_result) -> FileSignature:
    return FileSignature(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[BatchJob, FileSignature]:
    """Read and decode one record file.

    Raises FileNotFoundError if it vanished (a normal race with delete), and
    InvalidRecordError for anything that is not a valid record of the job named
    by the file: symlinks, non-regular files, hard-linked files, oversized
    files and undecodable content.
    """
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
