"""Writes that failed and are tried again: one backoff policy, and the queue's kept changes.

A status write may fail for a while (a full disk, a server restarting). What
failed is never dropped: a change to a job's record is kept here (a
``RetryEntry``), shown at once through the queue's read-your-writes overlay,
and written by the supervisor when it is due. Owns its lock and its entries;
relies on the store to write and on the overlay to show what waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from statusbridge.cache import StatusCache
from statusbridge.errors import UnsafeFolderError
from statusbridge.jobs._overlay import Overlay
from statusbridge.record import BatchJob
from statusbridge.store import StatusStore

__all__ = [
    "FAILURE_LOG_SECONDS",
    "START_TRIES",
    "WRITE_BACKOFF",
    "WRITE_ERRORS",
    "Backoff",
    "Change",
    "FailureLog",
    "RetryEntry",
    "WriteRetries",
]

logger = logging.getLogger(__name__)

# Write failures that may pass (a full disk, a server away, a temp folder someone
# replaced): what failed is kept and written again, and the job goes on.
WRITE_ERRORS: tuple[type[Exception], ...] = (OSError, UnsafeFolderError)

# A status write that keeps failing (a full disk, a restarting server) is retried
# at every later write; its first failure is logged with the traceback, repeats at
# most this often, so the log stays readable while the job goes on.
FAILURE_LOG_SECONDS = 60.0

# Shutdown keeps trying the kept changes this long before it gives them up (logged).
SHUTDOWN_WRITE_TRIES = 10.0

# A job whose start could not be written is started again after the backoff's
# delays, at most this many times in all (about a minute), then it fails saying why.
START_TRIES = 14

Change = Callable[[BatchJob | None], dict[str, Any] | None]


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next try of a failing write: doubling, up to ``maximum``."""

    first: float
    maximum: float

    def after(self, delay: float) -> float:
        """The wait after a try that followed a wait of ``delay``."""
        return min(delay * 2, self.maximum)

    def before(self, attempt: int) -> float:
        """The wait before try number ``attempt + 1`` (``attempt`` tries failed)."""
        return min(self.first * 2.0 ** (attempt - 1), self.maximum)


# The queue's writes that failed: a kept change, a start, a deferred record.
WRITE_BACKOFF = Backoff(first=0.5, maximum=5.0)


class FailureLog:
    """When to log a write that keeps failing: its first failure, then at most
    every FAILURE_LOG_SECONDS (with a count), so an outage does not flood the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # While writes fail: (when last logged, failures not logged since).
        self._failing: tuple[float, int] | None = None

    def failed(self) -> int | None:
        """A write failed: 0 to log it with its traceback (the first), n to log
        that n failed since the last log, None to stay quiet."""
        now = time.monotonic()
        with self._lock:
            failing = self._failing
            if failing is None:
                self._failing = (now, 0)
                return 0
            if now - failing[0] < FAILURE_LOG_SECONDS:
                self._failing = (failing[0], failing[1] + 1)
                return None
            self._failing = (now, 0)
            return failing[1] + 1

    def succeeded(self) -> bool:
        """A write worked: True if writes were failing (worth a log line)."""
        if self._failing is None:
            return False
        with self._lock:
            was, self._failing = self._failing, None
        return was is not None


@dataclass(frozen=True)
class RetryEntry:
    """A change to a job's record whose write failed: tried again at ``due`` (monotonic)."""

    due: float
    delay: float  # the wait before this try; doubled after another failure
    change: Change


class WriteRetries:
    """Changes to written records whose write failed, by job id, until they are written.

    ``entries`` is read without the lock by the UI path (``job_id in retries``);
    every change to it holds the lock.
    """

    def __init__(
        self,
        store: StatusStore,
        cache: StatusCache,
        overlay: Overlay,
        *,
        clock: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._cache = cache
        self._overlay = overlay
        self._clock = clock
        self._wake = wake  # the supervisor writes what is due
        self.lock = threading.Lock()
        self.entries: dict[str, RetryEntry] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.entries

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.entries)

    def kept(self, job_id: str) -> RetryEntry | None:
        return self.entries.get(job_id)

    def drop(self, job_id: str) -> None:
        """A new run of ``job_id`` starts: a change kept for the earlier run is moot."""
        with self.lock:
            self.entries.pop(job_id, None)

    def write_earlier_run(self, job_id: str) -> None:
        """A new run of ``job_id`` starts: an earlier run's kept outcome is written first."""
        kept = self.kept(job_id)
        if kept is not None:
            self.write_kept(job_id, kept)

    def write_or_keep(self, job_id: str, change: Change, what: str) -> None:
        """Write ``change`` now; if that fails for a while, keep it and write it later."""
        try:
            self._store.modify(job_id, change)
        except WRITE_ERRORS:
            logger.warning("job %s: could not record %s; will try again", job_id, what,
                           exc_info=True)  # fmt: skip
            self.keep(job_id, change)
        except Exception:
            logger.exception("job %s: could not record %s", job_id, what)

    def keep(self, job_id: str, change: Change) -> None:
        """Keep a change whose write failed: shown at once, written by a retry."""
        local = self._overlay.newest(job_id, self._cache.get(job_id))
        if local is not None:  # never applied to another run of this job id
            change = partial(_for_run, change, local.created_at)
        first = WRITE_BACKOFF.first
        with self.lock:  # before the overlay shows it: ``get_job_status`` then trusts ours
            self.entries[job_id] = RetryEntry(time.monotonic() + first, first, change)
        self._overlay.show_change(job_id, local, change(local), self._clock())
        self._wake()

    def write_due(self, *, force: bool = False) -> float | None:
        """Write the changes that are due; returns when the next is due, None if none."""
        now = time.monotonic()
        with self.lock:
            due_now = [(k, v) for k, v in self.entries.items() if force or v.due <= now]
        for job_id, entry in due_now:
            self.write_kept(job_id, entry)
        with self.lock:
            return min((entry.due for entry in self.entries.values()), default=None)

    def write_kept(self, job_id: str, entry: RetryEntry) -> BatchJob | None:
        """One try at a kept change; kept longer if it fails again."""
        try:
            job = self._store.modify(job_id, entry.change)
        except WRITE_ERRORS as exc:
            logger.debug("job %s: writing its record failed again: %s", job_id, exc)
            longer = WRITE_BACKOFF.after(entry.delay)
            with self.lock:
                if self._kept_change(job_id) is entry.change:
                    later = RetryEntry(time.monotonic() + longer, longer, entry.change)
                    self.entries[job_id] = later
            return None
        except Exception:
            logger.exception("job %s: cannot write its record; giving up", job_id)
            job = None
        else:
            logger.info("job %s: its record is written now", job_id)
        with self.lock:
            if self._kept_change(job_id) is entry.change:
                del self.entries[job_id]
        if job is not None:
            self._overlay.replace(job)
        self._overlay.settle(job_id, job)
        return job

    def flush(self) -> None:
        """Before the store is let go: keep trying a while, then say what is lost.

        A short outage (a server restarting) should not cost the outcomes.
        """
        deadline = time.monotonic() + SHUTDOWN_WRITE_TRIES
        while self.entries and time.monotonic() < deadline:
            if self.write_due(force=True) is not None:
                time.sleep(WRITE_BACKOFF.first)
        with self.lock:
            lost, self.entries = self.entries, {}
        for job_id in lost:
            logger.error("job %s: its final record could not be written; it is lost", job_id)

    def _kept_change(self, job_id: str) -> Change | None:
        entry = self.entries.get(job_id)
        return None if entry is None else entry.change


def _for_run(
    change: Change, created_at: datetime | None, current: BatchJob | None
) -> dict[str, Any] | None:
    """``change``, unless ``current`` is another run of the job (created at another time)."""
    if current is not None and created_at is not None and current.created_at != created_at:
        return None
    return change(current)
