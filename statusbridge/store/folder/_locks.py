"""Striped cross-process locks: a fixed number of lock files, whatever the number of jobs.

Why stripes: a Unix lock file must never be deleted while another process may
be waiting on it (the waiter would lock an unlinked inode while a newcomer
locks a fresh file of the same name, and both would "hold" the lock). So lock
files are kept forever, and to keep them bounded each job id hashes (crc32,
stable across processes, unlike ``hash()``) onto one of ``STRIPES`` files.
Two jobs sharing a stripe only serialise their writes; nothing else.

Why descriptors stay open: ``filelock.FileLock`` opens and closes the lock file
on every acquire (about 70 us here); ``filelock.lock_descriptor`` on a
descriptor kept open costs about 1 us and contends with the same primitive.

Within one process a ``threading.Lock`` per stripe comes first: it makes
threads queue in memory instead of polling the file lock, and it guards the
shared descriptor.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from statusbridge.errors import LockTimeout

__all__ = ["STRIPES", "StripedLocks", "lock_name", "stripe_of"]

logger = logging.getLogger(__name__)

# Every process that writes a folder must agree on this number: it is part of
# the on-disk protocol, like the file format.
STRIPES = 64

_live: weakref.WeakSet[StripedLocks] = weakref.WeakSet()


def lock_name(stripe: int) -> str:
    return f".lock-{stripe:02d}"


def stripe_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % STRIPES


class StripedLocks:
    """The lock stripes of one status folder, for one process."""

    def __init__(self, directory: Path, *, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
        self._directory = directory
        self._file_mode = file_mode
        self._dir_mode = dir_mode
        # One list for the object's whole life (changed in place, never replaced), so
        # the finalizer can close what is open without holding on to the object.
        self._fds: list[int | None] = [None] * STRIPES
        self._reset()
        _live.add(self)
        # An object dropped without close() still releases its descriptors when
        # collected. Not at exit: the process's end closes them anyway.
        self._finalizer = weakref.finalize(self, _close_all, self._fds)
        self._finalizer.atexit = False

    def _reset(self) -> None:
        self._thread_locks = [threading.Lock() for _ in range(STRIPES)]
        self._fds[:] = [None] * STRIPES

    def _after_fork_in_child(self) -> None:
        # The child got copies of our descriptors, which share lock state with the
        # parent's, and of thread locks possibly held by threads that do not exist
        # here. Start over; closing the copies does not release the parent's locks.
        for fd in self._fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    logger.debug("closing inherited lock descriptor %d failed", fd)
        self._reset()

    def close(self) -> None:
        """Close the open lock descriptors (they reopen on next use); safe to call again."""
        for stripe in range(STRIPES):
            with self._thread_locks[stripe]:
                fd, self._fds[stripe] = self._fds[stripe], None
                if fd is not None:
                    os.close(fd)

    def path_for(self, job_id: str) -> Path:
        return self._directory / lock_name(stripe_of(job_id))

    def _open(self, path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(path, flags, self._file_mode)
        except FileNotFoundError:
            # The status folder was removed under us: recreate it and retry once.
            path.parent.mkdir(parents=True, exist_ok=True, mode=self._dir_mode)
            return os.open(path, flags, self._file_mode)

    def _still_linked(self, fd: int, path: Path) -> bool:
        """True if ``fd`` is still the file at ``path``.

        Someone may have deleted the folder (or the lock file) and a new process
        created a fresh one: our descriptor would then lock an orphan inode that
        nobody else sees. Checked after every acquire: one stat(), about 1 us.
        """
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        fst = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    @contextmanager
    def hold(self, job_id: str, timeout: float) -> Iterator[None]:
        """Hold the stripe of ``job_id`` across threads and processes, or raise LockTimeout.

        ``timeout`` may be ``math.inf``: wait as long as it takes.
        """
        stripe = stripe_of(job_id)
        path = self._directory / lock_name(stripe)
        deadline = time.monotonic() + timeout
        thread_lock = self._thread_locks[stripe]
        # Lock.acquire takes -1 for "forever"; a timeout above threading.TIMEOUT_MAX
        # (inf, or 1e300) raises OverflowError.
        wait = -1.0 if timeout >= threading.TIMEOUT_MAX else max(timeout, 0.0)
        if not thread_lock.acquire(timeout=wait):
            raise LockTimeout(job_id, timeout, str(path))
        try:
            fd = self._acquire_file(stripe, path, job_id, timeout, deadline)
            try:
                yield
            finally:
                unlock_descriptor(fd)
        finally:
            thread_lock.release()

    def _acquire_file(
        self, stripe: int, path: Path, job_id: str, timeout: float, deadline: float
    ) -> int:
        delay = 0.0001
        while True:
            fd = self._fds[stripe]
            if fd is None:
                fd = self._fds[stripe] = self._open(path)
            try:
                locked = lock_descriptor(fd, blocking=False)
            except OSError as exc:
                if exc.errno in (errno.EBADF,):
                    self._fds[stripe] = None
                    continue
                raise
            if locked:
                if self._still_linked(fd, path):
                    return fd
                unlock_descriptor(fd)
                os.close(fd)
                self._fds[stripe] = None
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(job_id, timeout, str(path))
            # Exponential back-off from 0.1 ms to 5 ms: short waits stay short,
            # long ones do not burn a core.
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.005)


def _close_all(fds: list[int | None]) -> None:
    """Finalizer of a StripedLocks nobody closed: no other thread can be using it now."""
    for stripe, fd in enumerate(fds):
        if fd is not None:
            fds[stripe] = None
            try:
                os.close(fd)
            except OSError:
                logger.warning("closing lock descriptor %d failed", fd, exc_info=True)


def _reinit_after_fork() -> None:
    for locks in list(_live):
        locks._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
