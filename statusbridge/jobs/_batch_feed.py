"""The background feed of a started batch: its jobs to the pool, their records as needed.

``BatchManager.start_batch`` saves the definition as started and hands its jobs
to a ``BatchFeed``; the caller's thread returns at once. The definition names
every job from then on. The feed, on its own thread, goes through the jobs in
chunks, asking ``stop()`` (the batch's cancel marker) before each, and:

- on thread workers with ``record_delay`` > 0, starts them from memory, as
  ``BatchQueue.submit`` starts its own jobs (``DeferredRecords``): a job that ends
  within ``record_delay`` writes only its final record, one that runs longer writes
  RUNNING then, and one still waiting gets its PENDING record then (in groups: one
  transaction on SQLite). Before a worker takes a job from memory it asks the
  definition (``stop(job_id)``) whether the batch is marked cancelled or the job was
  cancelled by itself; a look at the definition stands for ``MARKER_LOOK_SECONDS``
  (one look at its size while it is unchanged), so this costs no I/O per job;
- otherwise (process workers, or ``record_delay=0``), creates the chunk's PENDING
  records that do not exist yet in one ``StatusStore.create_absent``, asks
  ``stop()`` again *after* those records exist and *before* any of them reaches the
  pool, then submits them; a job someone already cancelled, or started, is skipped.

Why no job starts after ``cancel_batch`` from another process has returned: that
cancel sets the marker first, waits ``CANCEL_SETTLE_SECONDS`` (longer than a look
stands), then cancels every record it finds. A recorded job is found by it, and its
worker reads its record before it runs (``_start_deferred``); a job with no record is
found by the marker, which the feed asks before it records a chunk and each worker
asks before it takes a job from memory, on a look that began after the marker was
written. A cancel of one job with no record names it in the definition the same way
(then creates its record CANCELLED, for everyone to see: ``_unrecorded``). A job
already running when the cancel lands is asked to stop at its next write, or stopped
at its first one if it has written none, as any running job.

Relies on its ``FeedTarget`` (the queue's supervisor) for the store and the
pool; owns only its cursor and its thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from statusbridge.jobs._liveness import this_process
from statusbridge.jobs._write_retries import WRITE_ERRORS, Backoff
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore

__all__ = ["CANCELLED_ALONE", "FEED_CHUNK", "BatchFeed", "FeedTarget", "pending_fields"]

logger = logging.getLogger(__name__)

# Jobs per chunk: one look at the cancel marker per chunk (a read of the definition).
FEED_CHUNK = 500

# A record write that fails (a full disk, a server away) is tried again after
# these delays, at most FEED_WRITE_TRIES times, before the rest fails.
FEED_BACKOFF = Backoff(first=0.1, maximum=5.0)
FEED_WRITE_TRIES = 14

CANCELLED_BY_BATCH = "cancelled with its batch before it started"

# The record of a job cancelled by itself before it had one (``_unrecorded``, the owner).
CANCELLED_ALONE: dict[str, Any] = {
    "status": BatchStatus.CANCELLED,
    "cancel_requested": True,
    "message": "cancelled before it started",
}


class FeedTarget(Protocol):
    """Where a feed writes its records and sends its jobs (the queue's supervisor)."""

    @property
    def store(self) -> StatusStore: ...

    @property
    def cancel_pending(self) -> bool: ...

    @property
    def starts_in_memory(self) -> bool: ...

    def start_in_memory(
        self,
        func: Callable[[Any], Any],
        jobs: Sequence[tuple[str, Any]],
        batch_id: str,
        stopped: Callable[[str | None], bool],
    ) -> None: ...

    def note_recorded(self, jobs: Sequence[BatchJob]) -> None: ...

    def start_recorded(self, func: Callable[[Any], Any], job: BatchJob) -> None: ...

    def feed_ended(self, feed: BatchFeed) -> None: ...


@dataclass
class BatchFeed:
    """One started batch whose jobs are still being recorded and submitted."""

    batch_id: str
    func: Callable[[Any], Any]
    jobs: Sequence[tuple[str, Any]]  # (job id, params), in definition order
    # stop(None): the batch was cancelled (asked per chunk); stop(job_id): so was the job
    stop: Callable[[str | None], bool]
    done_count: int = 0  # jobs handled so far (recorded and submitted, or skipped)
    cancelled: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    # Jobs whose records may not exist yet, or are not past a look at the marker:
    # a cancel of one of them is the feed's to carry out.
    unsubmitted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.unsubmitted = {job_id for job_id, _ in self.jobs}

    def cancelled_record(self, job_id: str) -> dict[str, Any]:
        """The record of one of its jobs cancelled before the feed wrote it."""
        params = next((p for j, p in self.jobs if j == job_id), None)
        return {**_pending(job_id, params, self.batch_id), **CANCELLED_ALONE}

    def cancel_unfed(self, store: StatusStore, job_id: str) -> bool:
        """Cancel a job not fed yet: its record is created CANCELLED, unless one exists.

        False if a record exists (the feed wrote it meanwhile): cancel that one.
        """
        if self.cancelled:
            return True  # the feed records it CANCELLED
        fields = self.cancelled_record(job_id)
        written = store.modify(job_id, lambda current: fields if current is None else None)
        return written is not None

    @property
    def remaining(self) -> int:
        return len(self.jobs) - self.done_count

    def run(self, queue: FeedTarget) -> None:
        """Feed every job (on the feed's own thread); never raises."""
        try:
            self._feed(queue)
        except Exception:
            logger.exception("batch %s: its jobs could not all be submitted", self.batch_id)
            self._end_rest(queue, BatchStatus.FAILED, "batch could not be submitted")
        finally:
            self.unsubmitted.clear()
            self.finished.set()
            queue.feed_ended(self)

    def _feed(self, queue: FeedTarget) -> None:
        while self.done_count < len(self.jobs):
            if queue.cancel_pending or self._stopped():
                self._end_rest(queue, BatchStatus.CANCELLED, CANCELLED_BY_BATCH)
                return
            chunk = self.jobs[self.done_count : self.done_count + FEED_CHUNK]
            if queue.starts_in_memory:
                # Held in memory before they leave ``unsubmitted``: a cancel finds them.
                queue.start_in_memory(self.func, chunk, self.batch_id, self._stopped)
                self.unsubmitted.difference_update(job_id for job_id, _ in chunk)
                self.done_count += len(chunk)
                continue
            created = self._create(
                queue, {job_id: _pending(job_id, params, self.batch_id) for job_id, params in chunk}
            )
            if self._stopped():
                # Created after the marker was set: no cancel found them; never run them.
                for job in created:
                    self._write(queue, job.id, None)
                self.done_count += len(chunk)
                self.unsubmitted.difference_update(job_id for job_id, _ in chunk)
                self._end_rest(queue, BatchStatus.CANCELLED, CANCELLED_BY_BATCH)
                return
            # Past the check: from here a cancel finds these jobs by their records.
            queue.note_recorded(created)
            self.unsubmitted.difference_update(job_id for job_id, _ in chunk)
            for job in created:
                queue.start_recorded(self.func, job)
            self.done_count += len(chunk)

    def _stopped(self, job_id: str | None = None) -> bool:
        """Whether the batch was cancelled (or, given ``job_id``, that job by itself).

        A definition that cannot be read: False for the batch (logged); raised for a job,
        whose claim then reads the job's record instead.
        """
        if self.cancelled:
            return True
        if job_id is not None:
            return bool(self.stop(job_id))
        try:
            self.cancelled = bool(self.stop(None))
        except Exception:
            logger.warning("batch %s: cannot read its cancel marker", self.batch_id, exc_info=True)
        return self.cancelled

    def _write(
        self, queue: FeedTarget, job_id: str, create: dict[str, Any] | None, *, tries: int = 0
    ) -> BatchJob | None:
        """Create the record (``create``) if absent, or cancel it (None) if still PENDING.

        Returns the record written, None if there was nothing to do. Retries a
        write that fails for a while, then raises.
        """

        def change(current: BatchJob | None) -> dict[str, Any] | None:
            if create is not None:
                return create if current is None else None
            if current is None or current.status is not BatchStatus.PENDING:
                return None
            return {"status": BatchStatus.CANCELLED, "cancel_requested": True,
                    "message": CANCELLED_BY_BATCH}  # fmt: skip

        delay = FEED_BACKOFF.first
        tries = tries or FEED_WRITE_TRIES
        for attempt in range(1, tries + 1):
            try:
                return queue.store.modify(job_id, change)
            except WRITE_ERRORS as exc:
                if attempt == tries or queue.cancel_pending:
                    raise
                log = logger.warning if attempt == 1 else logger.debug
                log("batch %s: job %s: writing its record failed (%s); trying again",
                    self.batch_id, job_id, exc)  # fmt: skip
                time.sleep(delay)
                delay = FEED_BACKOFF.after(delay)
        return None  # not reached

    def _create(self, queue: FeedTarget, records: dict[str, dict[str, Any]]) -> list[BatchJob]:
        """Create the chunk's records that do not exist (one ``create_absent``: one transaction
        where the store has them); returns those this feed created, in order.

        A write that fails is tried again for a while, then raises. A failed call may
        have written some records before its error (a store without transactions): a
        PENDING record of this batch written by this process is this feed's then.
        """
        delay = FEED_BACKOFF.first
        created: dict[str, BatchJob] = {}
        failed = False
        for attempt in range(1, FEED_WRITE_TRIES + 1):
            todo = {job_id: fields for job_id, fields in records.items() if job_id not in created}
            try:
                created.update((job.id, job) for job in queue.store.create_absent(todo))
                break
            except WRITE_ERRORS as exc:
                if attempt == FEED_WRITE_TRIES or queue.cancel_pending:
                    raise
                failed = True
                log = logger.warning if attempt == 1 else logger.debug
                log("batch %s: writing %d records failed (%s); trying again",
                    self.batch_id, len(todo), exc)  # fmt: skip
                time.sleep(delay)
                delay = FEED_BACKOFF.after(delay)
        if failed:
            me = this_process().owner
            for job_id in records.keys() - created.keys():
                job = queue.store.read(job_id)
                ours = job is not None and job.batch_id == self.batch_id and job.owner == me
                if ours and job is not None and job.status is BatchStatus.PENDING:
                    created[job_id] = job
        return [created[job_id] for job_id in records if job_id in created]

    def _end_rest(self, queue: FeedTarget, status: BatchStatus, why: str) -> None:
        """Give every job not handled yet a final record (unless it has one)."""
        key = "error_message" if status is BatchStatus.FAILED else "message"
        for job_id, params in self.jobs[self.done_count :]:
            fields = {**_pending(job_id, params, self.batch_id), "status": status, key: why}
            if status is BatchStatus.CANCELLED:
                fields["cancel_requested"] = True
            try:
                self._write(queue, job_id, fields, tries=1)
            except Exception:
                logger.exception("batch %s: cannot record job %s %s", self.batch_id, job_id,
                                 status.value)  # fmt: skip
            self.unsubmitted.discard(job_id)
            self.done_count += 1


def _pending(job_id: str, params: Any, batch_id: str) -> dict[str, Any]:
    # The definition's params are frozen already: the store takes them as they are.
    return pending_fields(params, batch_id)


def pending_fields(params: Any, batch_id: str | None) -> dict[str, Any]:
    """A new job's PENDING record, as this process submits it."""
    return {
        "status": BatchStatus.PENDING,
        "params": params,
        "batch_id": batch_id,
        "result": None,
        "error_message": None,
        "progress": None,
        "message": "",
        "started_at": None,
        "completed_at": None,
        **this_process().fields(),
        "cancel_requested": False,
        "heartbeat_at": None,
    }
