"""FolderCache, the folder backend of StatusCache: a Snapshot kept current from file events.

Threads: watchdog's thread only records *which names* changed and wakes the
cache thread; the cache thread reads and decodes each changed file once,
builds the next Snapshot and swaps one attribute. ``snapshot()`` reads that
attribute: no system call, no lock, whatever the writers are doing.

Events make it fast; a periodic reconcile (a stat signature per file, so
unchanged files are not re-read) makes it certain after lost events, a dead
observer or a deleted and recreated folder.

Ownership: the thread's life is the shared core's (``_cache``); the observer is
one of its resources, and watchdog's event handler holds the cache weakly. A
cache dropped without ``close()`` is collected, and its finalizer makes the
cache thread stop the observer and end.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from statusbridge.cache._cache import StatusCache, _Action, _Key
from statusbridge.cache._health import CacheHealth
from statusbridge.cache._snapshot import Snapshot
from statusbridge.cache._watcher import FolderWatch
from statusbridge.cache.folder._safety_net import SafetyNet, folder_stamp
from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob
from statusbridge.record._ranges import AT_LEAST_ONE, POSITIVE
from statusbridge.store import DEFAULT_MAX_BYTES
from statusbridge.store._files import (
    FOREIGN_REASON,
    RECORD_SUFFIX,
    FileSignature,
    classify_name,
    describe_non_regular,
    read_record_file,
    signature_of,
    unreadable_reason,
    written_version,
)

__all__ = ["FolderCache"]

logger = logging.getLogger(__name__)

Subscriber = Callable[[Snapshot, frozenset[str]], None]

_LIVENESS_INTERVAL = 0.5
# Longest versions_of waits for the cache thread before answering "none known".
_VERSIONS_PATIENCE = 0.1


class FolderCache(StatusCache):
    """Watch ``directory`` and keep an immutable in-memory ``Snapshot`` of every job.

    Starts on construction (initial scan, then observer); use as a context
    manager or call ``close()``.

    >>> import tempfile
    >>> from statusbridge import StatusStore
    >>> folder = tempfile.mkdtemp()
    >>> _ = StatusStore(folder).update("job-1", status="running", progress=0.5)
    >>> with StatusCache(folder) as cache:
    ...     cache.get("job-1").progress
    0.5
    """

    _absorbs_writes = True

    def __init__(
        self,
        directory: str | os.PathLike[str] = "batch_status",
        *,
        reconcile_interval: float = 30.0,
        polling: bool = False,
        poll_interval: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        POSITIVE.check("reconcile_interval", reconcile_interval)
        POSITIVE.check("poll_interval", poll_interval)
        AT_LEAST_ONE.check("max_bytes", max_bytes)
        self._directory = Path(directory).absolute()
        self._folder = str(self._directory)
        self.reconcile_interval = reconcile_interval
        self._polling = polling
        self._poll_interval = poll_interval
        self.max_bytes = max_bytes

        self._init_core()
        self._apply_lock = threading.RLock()  # cache-internal; never taken by readers

        # State below is changed only while holding _apply_lock.
        self._known: dict[str, FileSignature] = {}
        self._watched_ident: tuple[int, int] | None = None
        self._directory_present = False

        # Fed by watchdog's thread.
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._rescan_requested = False
        self._check_requested = False
        self._wake = self._life.wake  # (_init_core made the life)

        self._observer_restarts = 0
        self._next_reconcile = time.monotonic() + reconcile_interval
        self._next_check = time.monotonic() + _LIVENESS_INTERVAL
        self._net = SafetyNet()

        try:
            if not self._directory.is_dir():  # (an existing folder is only read)
                self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            logger.warning("statusbridge: cannot create %s (%s); waiting for it", self._folder, exc)
        with self._apply_lock:
            # Watch first, then scan: a write landing between the two is seen twice, never missed.
            self._ensure_watch()
            self._reconcile(count=False)
        self._start_thread(f"statusbridge-cache:{self._directory.name}")

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def _watch(self) -> FolderWatch | None:
        watch = self._life.resources.get("watch")
        assert watch is None or isinstance(watch, FolderWatch)
        return watch

    @_watch.setter
    def _watch(self, watch: FolderWatch | None) -> None:
        self._life.hold("watch", watch)

    def health(self) -> CacheHealth:
        watch = self._watch
        return CacheHealth(
            running=not self._closed and self._thread.is_alive(),
            backend=watch.backend if watch else "none",
            version=self._snapshot.version,
            jobs=len(self._snapshot),
            events=self._events,
            rescans=self._rescans,
            last_event_at=self._last_event_at,
            invalid_files=self._invalid_view,
            directory=self._folder,
            directory_present=self._directory_present,
            observer_restarts=self._observer_restarts,
            last_error=self._last_error,
            backend_note=watch.fallback_reason if watch else None,
            clock_skew=self._skew_note,
            watched_directory=(
                watch.watched if watch and watch.watched != os.path.abspath(self._folder) else None
            ),
        )

    def _rescan_here(self) -> Snapshot:
        with self._apply_lock:
            if not self._closed:
                self._check_watch()  # a closed cache must not start a new observer
            self._reconcile()
        return self._snapshot

    def versions_of(self, jobs: Iterable[BatchJob]) -> dict[str, bytes]:
        """The file signature each of ``jobs`` was read from, if the snapshot still shows it.

        Under the apply lock the signatures and the snapshot agree: a job that is
        the very object of the current snapshot was decoded from the file whose
        signature is known (or from an equal one), unless that name is invalid now.
        The lock is waited for briefly only: subscribers run under it, and one may be
        waiting for the caller (a queue's supervisor); then the answer is ``{}``.
        """
        versions: dict[str, bytes] = {}
        if not self._apply_lock.acquire(timeout=_VERSIONS_PATIENCE):
            return versions
        try:
            snap = self._snapshot
            for job in jobs:
                name = f"{job.id}{RECORD_SUFFIX}"
                sig = self._known.get(name)
                if sig is not None and snap.get(job.id) is job and name not in self._invalid:
                    versions[job.id] = sig
        finally:
            self._apply_lock.release()
        return versions

    def __repr__(self) -> str:
        return f"<StatusCache {self._folder!r} version={self._snapshot.version}>"

    # -- EventSink (called on watchdog's thread; keep them trivial) -----------
    def names_changed(self, names: list[str]) -> None:
        with self._pending_lock:
            self._pending.update(names)
        self._wake.set()

    def folder_changed(self) -> None:
        self._check_requested = True
        self._wake.set()

    def events_lost(self) -> None:
        logger.warning("statusbridge: events were lost for %s; rescanning", self._folder)
        self._rescan_requested = True
        self._wake.set()

    def event_seen(self) -> None:
        self._events += 1
        self._last_event_at = datetime.now(UTC)

    # -- the cache thread (see _run) -------------------------------------------
    def _seconds_to_next_step(self) -> float:
        return max(0.0, min(self._next_reconcile, self._next_check) - time.monotonic())

    def _advance(self, *, full: bool) -> None:
        """One round of the cache thread: apply what changed, reconcile when due."""
        with self._pending_lock:
            names, self._pending = self._pending, set()
        asked = full
        full, self._rescan_requested = self._rescan_requested or full, False
        now = time.monotonic()
        with self._apply_lock:
            if asked or self._check_requested or now >= self._next_check:
                self._check_requested = False
                self._next_check = now + _LIVENESS_INTERVAL
                full = self._check_watch() or full
            due = now >= self._next_reconcile
            if due:
                self._next_reconcile = now + self.reconcile_interval
            absorbed = self._take_absorbed()
            if full or (due and self._full_reconcile_due()):
                self._reconcile()
                self._next_reconcile = time.monotonic() + self.reconcile_interval
            else:
                if absorbed:
                    self._apply_absorbed(absorbed)
                if names:
                    self._apply_names(names)

    def _failed(self, exc: Exception) -> float:
        # The loop must survive anything; the next reconcile repairs the state.
        super()._failed(exc)
        self._rescan_requested = True
        time.sleep(0.05)
        return 0.0

    def _full_reconcile_due(self) -> bool:
        watch = self._watch
        trusted = watch is not None and watch.backend != "polling" and watch.is_alive()
        return self._net.needs_full(
            trusted=trusted, events=self._events, stamp=folder_stamp(self._folder)
        )

    def _ensure_watch(self) -> None:
        try:
            st = os.stat(self._directory)
            present = stat.S_ISDIR(st.st_mode)
        except OSError:
            present = False
        self._directory_present = present
        if not present:
            self._watched_ident = None
            return
        try:
            self._watch = FolderWatch(
                self._folder, self, polling=self._polling, poll_interval=self._poll_interval
            )
            self._watched_ident = (st.st_dev, st.st_ino)
        except OSError as exc:
            self._last_error = f"cannot watch {self._folder}: {exc}"
            logger.warning("statusbridge: %s; relying on periodic rescans", self._last_error)
            self._watched_ident = None

    def _check_watch(self) -> bool:
        """Re-watch if the folder vanished, came back or was replaced, or the observer died.

        Returns True if a full rescan is needed.
        """
        try:
            st = os.stat(self._directory)
            ident: tuple[int, int] | None = (
                (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
            )
        except OSError:
            ident = None
        watch = self._watch
        if ident == self._watched_ident and ident is not None:
            if watch is not None and watch.is_alive():
                return False
            logger.warning("statusbridge: observer for %s died; restarting it", self._folder)
            self._observer_restarts += 1
        elif ident is None and self._watched_ident is None and not self._directory_present:
            return False  # still missing, nothing to do
        else:
            logger.info("statusbridge: folder %s changed identity; re-watching", self._folder)
        if watch is not None:
            watch.stop()
            self._watch = None
        self._ensure_watch()
        return True

    # -- applying changes (holding _apply_lock) --------------------------------
    def _reconcile(self, *, count: bool = True) -> None:
        if count:
            self._rescans += 1
        self._net.full_done(self._events, folder_stamp(self._folder))
        # scandir, not listdir: the entry type comes free with the listing (d_type),
        # so new regular files are opened without a stat first.
        regular: set[str] = set()
        names: list[str] = []
        try:
            with os.scandir(self._directory) as entries:
                for entry in entries:
                    names.append(entry.name)
                    if entry.is_file(follow_symlinks=False):
                        regular.add(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        except OSError as exc:
            self._last_error = f"cannot list {self._folder}: {exc}"
            logger.warning("statusbridge: %s", self._last_error)
            return
        present = set(names)
        gone = [n for n in (*self._known, *self._invalid) if n not in present]
        gone.extend(
            f"{job_id}{RECORD_SUFFIX}"
            for job_id in self._snapshot
            if f"{job_id}{RECORD_SUFFIX}" not in present
        )
        self._apply_names([n for n in names if not n.startswith(".")] + gone, regular)

    def _apply_names(
        self, names: list[str] | set[str], regular: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Re-read these names; ``regular`` lists those a fresh listing saw as regular files."""
        changes: dict[_Key, _Action] = {}
        invalid_before = dict(self._invalid)
        for name in set(names):
            kind = classify_name(name)
            if kind == "internal":
                continue
            if kind == "foreign":
                self._note_foreign(name)
                continue
            job_id = name[: -len(RECORD_SUFFIX)]
            try:
                outcome = self._load(name, listed_regular=name in regular)
            except Exception as exc:
                # A bug or an unexpected OS error on one file must not stop the others,
                # nor make the cache retry it in a hot loop: it waits until the file changes.
                logger.exception("statusbridge: reading %s failed unexpectedly", name)
                self._invalid[name] = f"internal error while reading: {type(exc).__name__}: {exc}"
                self._last_error = f"{name}: {type(exc).__name__}: {exc}"
                try:
                    self._known[name] = signature_of(os.lstat(self._directory / name))
                except OSError:
                    self._known.pop(name, None)
                continue
            if outcome is _UNCHANGED:
                continue
            current = self._snapshot.get(job_id)
            if outcome is None:
                if current is not None:
                    changes[job_id] = None
                continue
            assert isinstance(outcome, BatchJob)
            if current is not None:
                if outcome == current:
                    continue
                if outcome.created_at == current.created_at and outcome.seq < current.seq:
                    # Same incarnation of the job, older seq: a stale copy was put back.
                    self._invalid[name] = (
                        f"stale record (seq {outcome.seq} < {current.seq} seen before); "
                        "kept the newer"
                    )
                    continue
            changes[job_id] = outcome
        if self._invalid != invalid_before:
            self._invalid_view = MappingProxyType(dict(self._invalid))
        if changes:
            self._publish(changes)

    def _apply_absorbed(self, written: list[tuple[BatchJob, object]]) -> None:
        """This process's own writes (``absorb``): each shown if its file is still the one written.

        One lstat per record instead of open, read and decode; the signature is then
        known, so the file's event finds nothing new. A file replaced or removed
        since is left to its event (or the reconcile), which reads what is there now.
        """
        changes: dict[_Key, _Action] = {}
        invalid_before = len(self._invalid)
        for job, version in written:
            name = f"{job.id}{RECORD_SUFFIX}"
            try:
                st = os.lstat(f"{self._folder}{os.sep}{name}")
            except OSError:
                continue
            sig = signature_of(st)
            if sig == self._known.get(name):
                continue  # read already, through its event
            if st.st_nlink != 1 or written_version(sig) != version:
                continue
            self._known[name] = sig
            self._invalid.pop(name, None)
            self._consider(job.id, job, changes, fresh=False)
        if len(self._invalid) != invalid_before:
            self._invalid_view = MappingProxyType(dict(self._invalid))
        if changes:
            self._publish(changes)

    def _note_foreign(self, name: str) -> None:
        try:
            os.lstat(self._directory / name)
        except FileNotFoundError:
            self._invalid.pop(name, None)
        except OSError:
            self._invalid[name] = FOREIGN_REASON
        else:
            self._invalid[name] = FOREIGN_REASON

    def _load(self, name: str, *, listed_regular: bool = False) -> BatchJob | object | None:
        """Read one record file: a BatchJob, None (gone), or _UNCHANGED (keep what we have).

        A file seen before gets one lstat to tell whether it changed (a replace makes a
        new inode), and any file of unknown type too: a FIFO or device file must be
        recognised before it is opened. Only a new file that the directory listing
        already reported as regular is opened straight away (O_NOFOLLOW still guards
        against a symlink swapped in since).
        """
        # A str path, not a Path: joining Paths costs more than the open() at scan scale.
        path = f"{self._folder}{os.sep}{name}"
        known = self._known.get(name)
        if known is not None or not listed_regular:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                self._known.pop(name, None)
                self._invalid.pop(name, None)
                return None
            sig = signature_of(st)
            if known == sig:
                return _UNCHANGED
            if not stat.S_ISREG(st.st_mode):
                self._known[name] = sig
                self._invalid[name] = describe_non_regular(st)
                return _UNCHANGED
        try:
            job, sig = read_record_file(path, max_bytes=self.max_bytes, name=name)
        except FileNotFoundError:
            self._known.pop(name, None)
            self._invalid.pop(name, None)
            return None
        except InvalidRecordError as exc:
            # Remember the version that was read (not a later stat: a writer may have
            # finished in between, and its close event must still trigger a re-read).
            if isinstance(exc.signature, FileSignature):
                self._known[name] = exc.signature
            else:  # refused before opening (a symlink): its own lstat identifies it
                try:
                    self._known[name] = signature_of(os.lstat(path))
                except OSError:
                    self._known.pop(name, None)
            self._invalid[name] = exc.reason
            return _UNCHANGED
        except OSError as exc:
            # Not remembered in _known, so the next event or reconcile retries it.
            self._invalid[name] = unreadable_reason(exc)
            return _UNCHANGED
        self._known[name] = sig
        self._invalid.pop(name, None)
        return job


_UNCHANGED = object()
