"""The folder backend's shelf: documents as ``<name>.json`` files (see ``store/_shelf.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from statusbridge.errors import LockTimeout
from statusbridge.store.folder._atomic import write_atomic
from statusbridge.store.folder._locks import StripedLocks

__all__ = ["FolderShelf"]

LOCK_TIMEOUT = 10.0
"""Seconds a folder shelf waits for its lock (held only for one read and one write)."""

# Every write of an existing document takes the same lock: one stripe of the
# striped locks, so the folder holds one hidden lock file, whatever its documents.
_LOCK_KEY = "shelf"


class FolderShelf:
    """Documents as ``<name>.json`` files; writes of existing ones under one lock file.

    The lock is ``flock`` on a hidden ``.lock-NN`` file in the folder (``names()``
    lists only ``*.json``), held by ``replace``, ``remove`` and a non-exclusive
    ``put``, so a compare-and-swap's read, compare and rename cannot interleave
    with another statusbridge writer of the folder, in this process or another.
    An exclusive ``put`` needs no lock: the kernel refuses an existing name.

    Caveats: ``flock`` on NFS is emulated by Linux clients with POSIX byte-range
    locks (kernel 2.6.12+), which work across hosts only when the server's lock
    manager is reachable; a mount with ``nolock`` or ``local_lock=flock/all``
    serialises the writers of one host only. Programs that rewrite a document
    without taking the lock (by hand, or an older statusbridge) are not
    serialised at all.
    """

    @classmethod
    def open(cls, folder: Path, *, create: bool = True) -> FolderShelf:
        """The registered opener: the folder is made if missing, with ``create``."""
        if create:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(folder)

    def __init__(self, folder: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.folder = folder
        self.label = str(folder)
        self.lock_timeout = lock_timeout
        self._locks = StripedLocks(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    @contextmanager
    def _held(self, name: str) -> Iterator[None]:
        """The shelf's lock; a timeout names the document, not the lock's key."""
        try:
            with self._locks.hold(_LOCK_KEY, self.lock_timeout):
                yield
        except LockTimeout as exc:
            raise LockTimeout(name, exc.timeout, exc.lock_path) from exc

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in entries if n.endswith(".json"))

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        if exclusive:
            write_atomic(self._path(name), data, exclusive=True)
            return
        with self._held(name):
            write_atomic(self._path(name), data)

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        with self._held(name):
            if self.get(name) != expected:
                return False
            write_atomic(self._path(name), data)
            return True

    def remove(self, name: str) -> None:
        with self._held(name), suppress(FileNotFoundError):
            self._path(name).unlink()

    def close(self) -> None:
        self._locks.close()
