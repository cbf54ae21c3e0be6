"""FolderStore, the folder backend of ``StatusStore``: one JSON file per job, replaced whole."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob, validate_job_id
from statusbridge.record._codec import encode_job_as_stored
from statusbridge.record._model import utc_now
from statusbridge.record._ranges import AT_LEAST_ONE
from statusbridge.store._files import (
    DEFAULT_MAX_BYTES,
    FOREIGN_REASON,
    RECORD_SUFFIX,
    STALE_TEMP_SECONDS,
    TEMP_DIR,
    classify_name,
    read_record_file,
    signature_of,
    sweep_temp_files,
    unreadable_reason,
    written_version,
)
from statusbridge.store._store import ScanReport, StatusStore, merged, overwrite_refused
from statusbridge.store.folder._atomic import write_atomic
from statusbridge.store.folder._locks import StripedLocks, stripe_of

__all__ = ["FolderStore"]


class _Changed(Enum):
    CHANGED = 0  # the file is not the one this store wrote last


_KNOWN_MAX = 4096  # jobs whose last written record a store keeps (see _read_for_update)

logger = logging.getLogger(__name__)


class FolderStore(StatusStore):
    """Atomic, locked writes of one JSON record per job in ``directory``.

    >>> import tempfile
    >>> store = StatusStore(tempfile.mkdtemp())
    >>> store.update("job-1", status="running", progress=0.25).seq
    1
    >>> store.update("job-1", meta={"step": "load"}).progress
    0.25
    >>> sorted(store.scan())
    ['job-1']

    ``durable=True`` also fsyncs the file and the folder, so an acknowledged
    write survives power loss (costs a few ms per write on most disks).
    ``lock_timeout`` bounds the wait for a job's lock, in seconds (``math.inf``:
    wait forever); NaN or a negative value raises ValueError here.

    Opening a store touches nothing on disk, so a user who may only read the
    folder can ``read`` and ``scan`` it. The first write creates the folder
    (``dir_mode``) and its hidden ``.tmp/`` if missing, and removes temp files
    that writers who died mid-write left behind.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = "batch_status",
        *,
        durable: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lock_timeout: float = 10.0,
        file_mode: int | None = 0o600,
        dir_mode: int | None = 0o700,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        file_mode = 0o600 if file_mode is None else file_mode
        dir_mode = 0o700 if dir_mode is None else dir_mode
        AT_LEAST_ONE.check("max_bytes", max_bytes)
        self._directory = Path(directory)
        self.durable = durable
        self.max_bytes = max_bytes
        self.lock_timeout = lock_timeout  # validated by the property
        self._file_mode = file_mode
        self._dir_mode = dir_mode
        self._clock = clock
        self._temp_dir = self._directory / TEMP_DIR
        self._locks = StripedLocks(self._directory, file_mode=file_mode, dir_mode=dir_mode)
        self._swept = False  # stale temp files are removed at the first write
        # job id -> (signature of the file this store wrote last, its record). Read and
        # written under that job's lock stripe; single dict operations are atomic.
        self._known: dict[str, tuple[bytes, BatchJob]] = {}

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def location(self) -> str:
        return str(self._directory.absolute())

    @property
    def label(self) -> str:
        return str(self._directory)

    def __repr__(self) -> str:
        return f"StatusStore({str(self._directory)!r}, durable={self.durable})"

    def close(self) -> None:
        """Close the lock descriptors this store keeps open (they reopen on next use).

        May be called twice. A store dropped without ``close()`` releases them when
        it is collected.
        """
        self._locks.close()

    # -- paths ---------------------------------------------------------------
    def path_for(self, job_id: str) -> Path:
        """The record file of ``job_id`` (ValueError for an unsafe id)."""
        return self._directory / f"{validate_job_id(job_id)}{RECORD_SUFFIX}"

    # -- reads (no lock: records are replaced atomically) ---------------------
    def read(self, job_id: str) -> BatchJob | None:
        """The job's record from disk, None if there is none.

        Raises InvalidRecordError if the file exists but is not a valid record.
        """
        path = self.path_for(job_id)
        known = self._known.get(job_id)
        if known is not None:
            same = self._still_written(path, known)
            if same is not _Changed.CHANGED:
                return same
        try:
            job, _sig = read_record_file(path, max_bytes=self.max_bytes)
        except FileNotFoundError:
            return None
        return job

    def scan_report(self) -> ScanReport:
        """Every valid record, and for every other file in the folder the reason it is not one.

        A record that cannot be decoded or read (permissions, I/O error) is one
        file's problem: it is reported and the others are read. Only a folder that
        cannot be listed raises.
        """
        jobs: dict[str, BatchJob] = {}
        invalid: dict[str, str] = {}
        for name, kind in self._names():
            if kind == "foreign":
                invalid[name] = FOREIGN_REASON
                continue
            try:
                job, _sig = read_record_file(self._directory / name, max_bytes=self.max_bytes)
            except FileNotFoundError:
                continue
            except InvalidRecordError as exc:
                invalid[name] = exc.reason
            except OSError as exc:
                invalid[name] = unreadable_reason(exc)
            else:
                jobs[job.id] = job
        for name, reason in invalid.items():
            logger.debug("scan skips %s: %s", name, reason)
        return ScanReport(jobs, invalid)

    def _names(self) -> Iterator[tuple[str, str]]:
        """(name, "record" or "foreign") of each file in the folder that is not ours."""
        try:
            names = os.listdir(self._directory)
        except FileNotFoundError:
            return
        for name in names:
            kind = classify_name(name)
            if kind != "internal":
                yield name, kind

    # -- writes --------------------------------------------------------------
    def modify(
        self, job_id: str, change: Callable[[BatchJob | None], dict[str, Any] | None]
    ) -> BatchJob | None:
        """Conditional read-modify-write: ``change(current)`` returns the fields to set, or None.

        ``change`` runs while the job's lock is held, so a decision such as "only
        if still PENDING" cannot race with another writer. Returns the new
        record, or None if ``change`` chose to write nothing.
        """
        path = self.path_for(job_id)
        with self._locks.hold(job_id, self.lock_timeout):
            current = self._read_for_update(job_id, path)
            fields = change(current)
            if fields is None:
                return None
            self._check_fields(fields)
            job = self._merge(job_id, current, fields)
            self._write(path, job)
        self._sweep_once()
        return job

    def create_absent(self, records: Mapping[str, Mapping[str, Any]]) -> list[BatchJob]:
        """As ``StatusStore.create_absent``: under each job's lock, one ``lstat`` says
        whether a file is there (any file: a record, valid or not, is left alone), and
        a new one is written as every record is (temp file, then rename: a reader never
        sees it half-written or with a second link)."""
        created = []
        for job_id, (_fields, job) in self._new_records(records, self._clock()).items():
            path = self.path_for(job_id)
            with self._locks.hold(job_id, self.lock_timeout):
                if os.path.lexists(path):
                    continue
                self._write(path, job)
            created.append(job)
        self._sweep_once()
        return created

    def _sweep_once(self) -> None:
        if not self._swept:
            self._swept = True  # (two threads' first writes may both sweep: harmless)
            self.remove_stale_temp_files()

    def _read_for_update(self, job_id: str, path: Path) -> BatchJob | None:
        known = self._known.pop(job_id, None)
        if known is not None:
            same = self._still_written(path, known)
            if same is not _Changed.CHANGED:
                return same
        try:
            job, _sig = read_record_file(path, max_bytes=self.max_bytes)
        except FileNotFoundError:
            return None
        except InvalidRecordError as exc:
            raise overwrite_refused(exc, str(path)) from None
        return job

    @staticmethod
    def _still_written(
        path: Path, known: tuple[bytes, BatchJob]
    ) -> BatchJob | Literal[_Changed.CHANGED] | None:
        """The record this store wrote last, if the file is still that one; None if it is
        gone; else ``CHANGED`` (read it).

        Every replace makes a new inode, an edit in place moves mtime (to the file
        system's timestamp granularity: the format asks other programs for
        write-temp-then-rename, never in place), and a second name (a hard link, which
        a read refuses) shows in st_nlink. Then one lstat stands for open, read and decode.
        """
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if st.st_nlink == 1 and written_version(signature_of(st)) == known[0]:
            return known[1]
        return _Changed.CHANGED

    def _merge(self, job_id: str, current: BatchJob | None, fields: dict[str, Any]) -> BatchJob:
        return merged(job_id, current, fields, self._clock())

    def _write(self, path: Path, job: BatchJob) -> None:
        """Called with the job's lock held."""
        data, stored = encode_job_as_stored(job)
        if len(data) > self.max_bytes:
            raise ValueError(
                f"record of job {job.id!r} would be {len(data)} bytes; the limit is "
                f"{self.max_bytes} (StatusStore(max_bytes=...)); nothing was written"
            )
        sig = write_atomic(
            path,
            data,
            durable=self.durable,
            file_mode=self._file_mode,
            temp_dir=self._temp_dir,
            dir_mode=self._dir_mode,
        )
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()  # bounded; the next update of each reads its file again
        version = written_version(sig)
        self._known[job.id] = (version, stored)
        if self._write_listeners:
            self._written(stored, version)

    def put_records(self, jobs: Iterable[BatchJob]) -> int:
        """Write these records as they are, each under its job's lock, unless already as new."""
        written = 0
        for job in jobs:
            path = self.path_for(job.id)
            with self._locks.hold(job.id, self.lock_timeout):
                try:
                    current, _sig = read_record_file(path, max_bytes=self.max_bytes)
                except (FileNotFoundError, InvalidRecordError):
                    current = None
                if current is not None and current.seq >= job.seq:
                    continue
                self._write(path, job)
                written += 1
        return written

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; False if there was none."""
        path = self.path_for(job_id)
        with self._locks.hold(job_id, self.lock_timeout):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
        return True

    # -- housekeeping --------------------------------------------------------
    def _after_cleanup(self) -> None:
        self.remove_stale_temp_files()

    def delete_if_unchanged(
        self, jobs: Iterable[BatchJob], *, versions: Mapping[str, bytes] | None = None
    ) -> list[str]:
        """Delete these records unless they changed since read; return the ids removed.

        Each lock stripe is taken once for all of its jobs. A job with a version
        (the file signature a cache of this folder read it from) is judged by one
        lstat: a writer replaces the file (new inode) and changes it under the same
        lock, and an edit in place or a new hard link moves its ctime. Jobs without
        one are read and compared (seq, created_at).
        """
        versions = versions or {}
        jobs = list(jobs)
        by_stripe: dict[int, list[BatchJob]] = {}
        for job in jobs:
            validate_job_id(job.id)
            by_stripe.setdefault(stripe_of(job.id), []).append(job)
        removed: set[str] = set()
        folder = os.fspath(self._directory)
        for group in by_stripe.values():
            with self._locks.hold(group[0].id, self.lock_timeout):
                for job in group:
                    path = f"{folder}{os.sep}{job.id}{RECORD_SUFFIX}"
                    if self._unchanged(job, path, versions.get(job.id)):
                        with suppress(FileNotFoundError):
                            os.unlink(path)
                        self._known.pop(job.id, None)
                        removed.add(job.id)
        return [job.id for job in jobs if job.id in removed]  # in the order given

    def _unchanged(self, job: BatchJob, path: str, version: bytes | None) -> bool:
        """Whether ``path`` still holds ``job`` (called with the job's lock held)."""
        if version is not None:
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return signature_of(st) == version
        # Re-read: the job may have been restarted since it was read.
        try:
            current, _sig = read_record_file(path, max_bytes=self.max_bytes)
        except (FileNotFoundError, InvalidRecordError):
            return False
        return current.seq == job.seq and current.created_at == job.created_at

    def _delete_one_if_unchanged(self, job: BatchJob) -> bool:
        return bool(self.delete_if_unchanged([job]))

    def remove_stale_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Remove temp files left by writers that died mid-write (older than ``max_age`` s).

        Regular files only, in the folder and its ``.tmp/`` (see ``sweep_temp_files``).
        """
        sweep = sweep_temp_files(self._directory, max_age=max_age, remove=True)
        for problem in sweep.problems:
            logger.warning("statusbridge: %s (in %s)", problem, self._directory)
        for place in sweep.unchecked:
            logger.warning("statusbridge: cannot look for stale temp files in %s", place)
        if sweep.stale:
            logger.info("removed %d stale temp file(s) from %s", len(sweep.stale), self._directory)
        return len(sweep.stale)
