"""Every error statusbridge raises on purpose.

One root, so callers can catch everything the library means with one clause,
and each leaf also subclasses the built-in error it is a kind of, so generic
handlers (``except ValueError``, ``except TimeoutError``) keep working::

    StatusBridgeError
     ├── InvalidRecordError   (ValueError)    a status document that cannot be decoded
     ├── LockTimeout          (TimeoutError)  a job's write lock was not had in time
     ├── UnusableDatabase     (OSError)       a sqlite:// file statusbridge cannot use
     ├── UnknownJobError      (KeyError)      an operation names a job that does not exist
     ├── UnsafeFolderError                    the folder's layout is unsafe to write through
     ├── BackendUnavailable   (ConnectionError) the server behind a URL location cannot be reached,
     │                                          or refuses writes for now (full, loading, busy)
     ├── BackendRefused       (PermissionError) the server refuses what we asked, for good:
     │                                          a missing permission, a wrong key type, a bad db
     ├── RecordVanished       (LookupError)   a record went from the server without a delete
     │                                          (evicted); a partial write will not recreate it
     └── JobCancelled                         raised inside a job after cancel was asked

Invalid job ids and invalid field values raise plain ``ValueError`` / ``TypeError``
(as any Python API does for bad arguments); I/O failures raise the ``OSError``
with the path in it.
"""

from __future__ import annotations

import os

__all__ = [
    "BackendRefused",
    "BackendUnavailable",
    "InvalidRecordError",
    "JobCancelled",
    "LockTimeout",
    "RecordVanished",
    "StatusBridgeError",
    "UnknownJobError",
    "UnsafeFolderError",
    "UnusableDatabase",
]


class StatusBridgeError(Exception):
    """Root of the errors statusbridge raises on purpose."""


class InvalidRecordError(StatusBridgeError, ValueError):
    """A status document is not a valid schema-1 record; ``reason`` says why."""

    def __init__(self, reason: str, *, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        # Set by the file reader: the (inode, size, mtime, ctime) of the version read.
        self.signature: object | None = None
        super().__init__(f"{source}: {reason}" if source else reason)


class LockTimeout(StatusBridgeError, TimeoutError):
    """The lock guarding a job's file could not be acquired within the timeout."""

    def __init__(self, job_id: str, timeout: float, lock_path: str) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.lock_path = lock_path
        super().__init__(
            f"could not lock job {job_id!r} within {timeout:g}s "
            f"(lock file {lock_path}); another writer holds it"
        )


class UnknownJobError(StatusBridgeError, KeyError):
    """An operation named a job (or batch) that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"


class UnsafeFolderError(StatusBridgeError):
    """Writing would go through a symlink or into a place another user controls.

    For example the status folder's ``.tmp`` is a symlink that cannot be removed, a
    file, or a folder owned by someone else. ``path`` names it; nothing was written.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(message)


class BackendUnavailable(StatusBridgeError, ConnectionError):
    """The server behind a location (``redis://...``) did not answer in time, or refused us.

    ``location`` is the URL without its password.
    """

    def __init__(self, message: str, location: str) -> None:
        self.location = location
        super().__init__(message)


class BackendRefused(StatusBridgeError, PermissionError):
    """The server behind a location refuses a command, and trying again will not help.

    A permission the user lacks (``NOPERM``: an ACL), a key of another type where ours
    should be (``WRONGTYPE``: another program's data), a database number the server does
    not have. ``location`` is the URL without its password; ``reply`` is the server's.
    A ``PermissionError``, as an unwritable folder's error is.
    """

    def __init__(self, message: str, location: str, reply: str) -> None:
        self.location = location
        self.reply = reply
        super().__init__(message)


class RecordVanished(StatusBridgeError, LookupError):
    """A job's record is gone from the server although nothing deleted it: evicted.

    A Redis server under a ``maxmemory-policy`` other than ``noeviction`` drops keys when
    full. A heartbeat or progress write would recreate such a record without its
    ``batch_id`` and ``params``, so it is refused: nothing was written. ``delete(job_id)``
    and a new write (or ``put_records``) start the job's record over on purpose.
    """

    def __init__(self, job_id: str, location: str) -> None:
        self.job_id = job_id
        self.location = location
        super().__init__(
            f"job {job_id!r}: its record vanished from {location} without a delete (evicted:"
            " the server's maxmemory-policy is not noeviction?); not recreated from a partial"
            " write. delete() it first to start it over"
        )


class JobCancelled(StatusBridgeError):
    """Raised by ``report_progress`` inside a job once its cancellation was requested."""


class UnusableDatabase(StatusBridgeError, OSError):
    """The file of a ``sqlite://`` location is not SQLite, is corrupt, or has a newer schema.

    ``path`` names the file; nothing was written to it.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])
