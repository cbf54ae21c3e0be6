"""Deferred records: a thread job's PENDING record held in memory until it is due.

A job no other process can name (a generated id, run in this process) starts
life here. Its PENDING record is written only if it still waits after
``record_delay`` (by the supervisor, ``write_overdue``); a worker that takes it
first claims it from memory, and the job's record is then created by its first
write. A short job thus costs one write instead of three. Nothing another
process could act on is lost: until a record exists, no one else knows the
job's id, and the queue's own ``cancel`` and ``get_job_status`` see the memory.

Owns its entries, its lock, and ``writing``: a writer holds ``writing`` from
popping an entry until its record is stored, so a worker that finds its job
gone waits for that write before it reads the record.
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

from statusbridge.jobs._batch_feed import CANCELLED_ALONE, CANCELLED_BY_BATCH
from statusbridge.jobs._context import JobContext, register
from statusbridge.jobs._liveness import this_process
from statusbridge.jobs._overlay import Overlay
from statusbridge.jobs._write_retries import FAILURE_LOG_SECONDS, WRITE_BACKOFF, FailureLog
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore

__all__ = [
    "CANCELLED_ALONE",
    "CANCELLED_BY_MARKER",
    "WRITE_GROUP",
    "DeferredRecord",
    "DeferredRecords",
]

logger = logging.getLogger(__name__)

# How many deferred PENDING records the supervisor writes per hold of ``writing``
# (a worker whose job is among them waits for the group).
WRITE_GROUP = 64

_NOT_TO_RUN = object()  # ``_take``: the job ended before it started

CANCELLED_BY_MARKER = {
    "status": BatchStatus.CANCELLED,
    "cancel_requested": True,
    "message": CANCELLED_BY_BATCH,
}


@dataclass(frozen=True)
class DeferredRecord:
    """A pending job's record held in memory until it is written (or its worker claims it)."""

    since: float  # when submitted (monotonic): written ``record_delay`` after
    fields: dict[str, Any]


def _cancelled_if_pending(
    change: dict[str, Any], current: BatchJob | None
) -> dict[str, Any] | None:
    if current is None or current.status is not BatchStatus.PENDING:
        return None
    return change


class DeferredRecords:
    """Pending jobs with no record yet, oldest first."""

    def __init__(
        self,
        store: StatusStore,
        overlay: Overlay,
        *,
        record_delay: float,
        clock: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._overlay = overlay
        self._record_delay = record_delay
        self._clock = clock
        self._wake = wake  # the supervisor writes what is due
        self._lock = threading.Lock()
        self.writing = threading.Lock()
        self.entries: dict[str, DeferredRecord] = {}
        self._failures = FailureLog()  # the writes' failures, logged rate-limited

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.entries

    def hold(self, job_id: str, fields: dict[str, Any]) -> None:
        with self._lock:
            first = not self.entries
            self.entries[job_id] = DeferredRecord(time.monotonic(), fields)
        if first:
            self._wake()  # the supervisor writes it if it still waits

    def claim(
        self, ctx: JobContext, *, named: bool = False, stopped: Callable[[], bool] | None = None
    ) -> tuple[Any] | None:
        """A worker takes its job from memory if no record of it was written: (params,).

        ``stopped``: asked right before each try (True: the job is not taken).
        """
        while True:
            if stopped is not None and stopped():
                return None
            claimed = self._take(ctx, named=named)
            if claimed is _NOT_TO_RUN:
                return None
            if isinstance(claimed, tuple):
                return claimed
            # A write of its PENDING record may have been under way: it has landed
            # now, or it failed and put the job back in memory (claim it then).
            with self.writing, self._lock:
                if ctx.job_id not in self.entries:
                    return None

    def claim_named(
        self, ctx: JobContext, *, stopped: Callable[[str | None], bool]
    ) -> tuple[Any] | None:
        """``claim`` for a job other processes can name: a batch's, fed from memory.

        Asked right before the job is taken: ``stopped(job_id)``, whether the batch's
        definition carries its cancel marker (``cancel_batch`` anywhere) or names this
        job among those cancelled while they had no record (a cancel of the job
        anywhere); the job is then recorded CANCELLED here instead. The definition is
        the one place such a cancel is written first, so no read of the job's record is
        needed, unless the definition cannot be read. A job taken writes its record
        first when it outlives ``record_delay`` or ends; that write keeps a record made
        final meanwhile.
        """
        job_id = ctx.job_id

        def cancelled_here() -> bool:
            try:
                if not stopped(job_id):
                    return False
            except Exception:
                logger.warning("job %s: cannot read its batch's definition", job_id, exc_info=True)
                if job_id in self.entries and self._store.read(job_id) is not None:
                    with self.writing, self._lock:
                        self.entries.pop(job_id, None)  # the record there is the job's now
                return False
            change = CANCELLED_BY_MARKER if stopped(None) else CANCELLED_ALONE
            if not self.write_now(job_id, **change):
                # Its PENDING record was written meanwhile (write_now waited for that).
                self._store.modify(job_id, partial(_cancelled_if_pending, change))
            return True

        # None: cancelled, or its PENDING record was written (claim waits for a write
        # under way); the worker then starts from that record.
        return self.claim(ctx, named=True, stopped=cancelled_here)

    def _take(self, ctx: JobContext, *, named: bool = False) -> tuple[Any] | object | None:
        with self._lock:
            entry = self.entries.get(ctx.job_id)
            if entry is None:
                return None
            if entry.fields["status"] is not BatchStatus.PENDING:
                return _NOT_TO_RUN  # ended in memory (its write failed): the retry writes it
            del self.entries[ctx.job_id]
            now = self._clock()
            record = {
                **entry.fields,
                "status": BatchStatus.RUNNING,
                "started_at": now,
                "heartbeat_at": now,
                **this_process().fields(),
            }
            # Due ``record_delay`` after submit, not after start: others see
            # every job within that delay, however long it waited in memory.
            due = entry.since + self._record_delay - time.monotonic()
            ctx.start_unwritten(record, write_after=max(0.0, due), named=named)
            register(ctx)  # before the lock is let go: cancel() finds it from now on
        self._overlay.change(
            ctx.job_id, status=BatchStatus.RUNNING, started_at=now, heartbeat_at=now
        )
        return (record["params"],)

    def write_overdue(self) -> float | None:
        """Write the PENDING records of jobs that waited ``record_delay`` in memory.

        Returns when (monotonic) the next one is due, None if none waits.
        """
        while True:
            with self.writing:
                with self._lock:
                    due_before = time.monotonic() - self._record_delay
                    overdue: list[tuple[str, DeferredRecord]] = []
                    for job_id, entry in self.entries.items():
                        if entry.since > due_before or len(overdue) >= WRITE_GROUP:
                            break
                        overdue.append((job_id, entry))
                    for job_id, _ in overdue:
                        del self.entries[job_id]
                    if not overdue:
                        oldest = next(iter(self.entries.values()), None)
                        return None if oldest is None else oldest.since + self._record_delay
                self._write_group(overdue)

    def write_now(self, job_id: str, **change: Any) -> bool:
        """Write the record of a job still pending in memory only, with ``change``.

        True if the job was in memory: its record is written, or, if the write
        failed, ``change`` stays in memory and is written by a retry.
        """
        with self.writing:
            with self._lock:
                entry = self.entries.pop(job_id, None)
            if entry is None:
                return False
            self._write(job_id, entry, change)
            return True

    def write_all(self) -> None:
        """Before the store is let go: a last try at every record still in memory."""
        with self.writing:
            with self._lock:
                remaining, self.entries = self.entries, {}
            for job_id, entry in remaining.items():
                self._write(job_id, entry, {})

    def _write_group(self, overdue: list[tuple[str, DeferredRecord]]) -> None:
        """PENDING records of jobs that waited, at once (one transaction on SQLite, one
        pipeline on Redis); if that fails, one by one, each failure kept for a retry."""
        if len(overdue) > 1:
            try:
                created = self._store.create_absent({i: e.fields for i, e in overdue})
            except Exception as exc:  # noqa: BLE001 - tried again one by one, each logged
                logger.debug("%d records at once failed (%s); one by one", len(overdue), exc)
            else:
                if self._failures.succeeded():
                    logger.info("records of jobs in memory are written again")
                for job in created:
                    self._overlay.replace(job)
                return
        for job_id, entry in overdue:
            self._write(job_id, entry, {})

    def _write(self, job_id: str, entry: DeferredRecord, change: dict[str, Any]) -> bool:
        # Under ``writing``, with the entry popped: no worker can claim it now.
        fields = {**entry.fields, **change}
        try:
            job = self._store.modify(job_id, lambda current: fields if current is None else None)
        except Exception as exc:  # noqa: BLE001 - logged (rate-limited), tried again
            self._log_failure(job_id, exc)
            retry_at = time.monotonic() + min(self._record_delay, WRITE_BACKOFF.first)
            with self._lock:
                # Kept with its change (a cancel must hold), first in line: due before
                # the others (O(jobs in memory), on a failure only).
                again = DeferredRecord(retry_at - self._record_delay, fields)
                self.entries = {job_id: again} | {
                    k: v for k, v in self.entries.items() if k != job_id
                }
            if change:
                self._overlay.change(job_id, **change)
            self._wake()  # the supervisor retries (it may not be the writer)
            return False
        if self._failures.succeeded():
            logger.info("records of jobs in memory are written again")
        if job is not None:
            self._overlay.replace(job)
        return job is not None

    def _log_failure(self, job_id: str, exc: Exception) -> None:
        unlogged = self._failures.failed()
        if unlogged == 0:
            logger.error(
                "job %s: could not write its record; will try again "
                "(repeats logged at most every %.0f s)",
                job_id,
                FAILURE_LOG_SECONDS,
                exc_info=exc,
            )
        elif unlogged is not None:
            logger.error(
                "records of jobs in memory: writes still failing (%d times since "
                "last logged); last: job %s: %s",
                unlogged,
                job_id,
                exc,
            )
