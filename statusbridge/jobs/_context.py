"""What a running job can call: ``report_progress`` and ``is_cancelled``, no object passed in.

The current job lives in a ContextVar set by the runner on the worker's thread,
in a thread or a process alike. Outside a job both functions are no-ops.

Progress is throttled like tqdm's ``mininterval``: a call inside the interval
only records the values (a few microseconds); the next call after it, the
heartbeat thread, or the end of the job writes them. Every real write reads
the record back under its lock, which is how a cancel request made by another
process (``cancel_requested`` in the file) reaches this job.

A thread job of a ``BatchQueue`` may start before any record of it exists
(see ``BatchQueue(record_delay=...)``): its context then holds the whole
record, and its first write, after ``record_delay`` or at its end, creates the
file. A job that ends sooner costs one write instead of three.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import weakref
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from statusbridge.errors import InvalidRecordError, JobCancelled
from statusbridge.jobs._write_retries import FAILURE_LOG_SECONDS, WRITE_ERRORS, FailureLog
from statusbridge.record import BatchJob
from statusbridge.record._frozen import freeze
from statusbridge.record._model import utc_now
from statusbridge.store import StatusStore

__all__ = [
    "JobContext",
    "current_job_id",
    "is_cancelled",
    "register",
    "report_progress",
    "running_context",
    "signal_cancel",
]

logger = logging.getLogger(__name__)

_current: ContextVar[JobContext | None] = ContextVar("statusbridge_job", default=None)

# Jobs running in this process, by id: a cancel from this process reaches them
# at once instead of at their next write.
_running: weakref.WeakValueDictionary[str, JobContext] = weakref.WeakValueDictionary()


class JobContext:
    """The state of one running job, shared by its thread and the heartbeat thread."""

    def __init__(self, store: StatusStore, job_id: str, *, interval: float) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.cancel_event = threading.Event()
        self._lock = threading.Lock()
        # Serialises writes of this job (its own thread, the heartbeat thread, the
        # final write): a heartbeat that took the pending values must not land
        # after the final record.
        self.write_lock = threading.Lock()
        self.finished = False
        self._pending: dict[str, Any] = {}
        self._pending_meta: dict[str, Any] = {}
        # The first report is written at once (like tqdm); later ones are throttled.
        self.last_write = time.monotonic() - interval
        self.last_check = self.last_write
        # The record's fields while no file of this job exists (None once written).
        self._unwritten: dict[str, Any] | None = None
        # Started over an existing PENDING record without writing RUNNING (a batch job).
        self.over_record = False
        # Started from memory, but named elsewhere (a batch's job): its record may have
        # been made meanwhile, by a cancel, and a final one is kept.
        self.named = False
        self._failures = FailureLog()

    def start_unwritten(
        self,
        record: dict[str, Any],
        *,
        write_after: float,
        over_record: bool = False,
        named: bool = False,
    ) -> None:
        """Run with no record on disk yet: the first write, ``write_after`` from now, creates it.

        Only for jobs whose state lives in this process (thread jobs).
        ``over_record``: the job's PENDING record exists; ``record`` holds the fields
        that make it RUNNING, and a first write that finds the record final (it
        was cancelled while it looked pending) stops the job instead.
        ``named``: a whole record, of a job others can name (a batch's): the first
        write creates it, or, if a final one was made meanwhile, keeps that and
        stops the job.
        """
        with self._lock:
            self._unwritten = dict(record)
            self.over_record = over_record
            self.named = named
        self.last_write = time.monotonic() + write_after - self.interval
        self.last_check = self.last_write

    @property
    def written(self) -> bool:
        """Whether the job's record exists (False while it lives in memory only)."""
        return self._unwritten is None

    def next_write_due(self, heartbeat_interval: float) -> float:
        """When (monotonic) the heartbeat thread must write: the first write, or a heartbeat."""
        if self._unwritten is not None:
            return self.last_write + self.interval
        return self.last_write + heartbeat_interval

    def record(self, progress: float | None, message: str | None, meta: dict[str, Any]) -> None:
        with self._lock:
            if progress is not None:
                self._pending["progress"] = progress
            if message is not None:
                self._pending["message"] = message
            if meta:
                self._pending_meta.update(meta)

    def take_pending(self) -> dict[str, Any]:
        """The fields to write next; while unwritten, the whole record under the reports.

        The unwritten record is kept until ``mark_written``: a failed write must
        not leave the next one creating a record without its params.
        """
        with self._lock:
            fields = dict(self._unwritten) if self._unwritten is not None else {}
            fields.update(self._pending)
            if self._pending_meta:
                fields["meta"] = dict(self._pending_meta)
            self._pending.clear()
            self._pending_meta.clear()
            return fields

    def put_back(self, fields: dict[str, Any]) -> None:
        """Return what a failed write took: the next write carries it, unless newer."""
        with self._lock:
            meta = fields.get("meta")
            if meta:
                self._pending_meta = {**meta, **self._pending_meta}
            for name, value in fields.items():
                if name in ("progress", "message"):
                    self._pending.setdefault(name, value)

    def mark_written(self) -> None:
        with self._lock:
            self._unwritten = None

    def note_write_failure(self, what: str) -> None:
        """Log a failed write of this job (call from an ``except`` block): the first
        with its traceback, repeats at most every FAILURE_LOG_SECONDS with a count."""
        unlogged = self._failures.failed()
        if unlogged == 0:
            logger.exception(
                "job %s: %s failed; the job goes on and later writes retry "
                "(repeats logged at most every %.0f s)",
                self.job_id,
                what,
                FAILURE_LOG_SECONDS,
            )
        elif unlogged is not None:
            logger.error(
                "job %s: writes still failing (%d times since last logged); last: %s: %s",
                self.job_id,
                unlogged,
                what,
                sys.exc_info()[1],
            )

    def note_write_success(self) -> None:
        if self._failures.succeeded():
            logger.info("job %s: its record is written again", self.job_id)

    def flush(self, *, now_utc: datetime | None = None) -> None:
        """Write what is pending plus a heartbeat; notice a cancel request in the file.

        Never changes a finished record: once the job's final status is written
        (by its runner, or by anyone who judged it dead or cancelled), late
        progress and heartbeats are dropped.
        """
        with self.write_lock:
            if self.finished:
                return
            creates = not self.written
            fields = self.take_pending()
            fields["heartbeat_at"] = now_utc or utc_now()
            self.last_write = self.last_check = time.monotonic()
            seen: list[BatchJob | None] = []

            def change(current: BatchJob | None) -> dict[str, Any] | None:
                seen.append(current)
                if current is None:
                    return fields if creates and not self.over_record else None
                if current.is_finished:
                    return None
                return fields

            try:
                job = self.store.modify(self.job_id, change)
            except WRITE_ERRORS:
                self.put_back(fields)  # the final write, at the latest, carries them
                raise
            if creates and job is not None:
                self.mark_written()
        if job is None:
            current = seen[-1] if seen else None
            keeps = self.over_record or self.named
            if creates and keeps and current is not None and current.is_finished:
                self.cancel_event.set()  # cancelled while its record said PENDING
            logger.debug(
                "job %s: progress not written, the record is %s",
                self.job_id,
                "gone" if current is None else current.status.value,
            )
            return
        if job.cancel_requested:
            self.cancel_event.set()

    def check_cancel(self) -> bool:
        now = time.monotonic()
        stale = now - self.last_check >= self.interval
        if not self.cancel_event.is_set() and stale and self.written:
            self.last_check = now
            try:
                job = self.store.read(self.job_id)
            except InvalidRecordError:
                logger.warning("record of job %s is unreadable; cannot check cancel", self.job_id)
                job = None
            except WRITE_ERRORS:  # a full disk, a server away: asked again next interval
                self.note_write_failure("reading its record for a cancel request")
                job = None
            if job is not None and job.cancel_requested:
                self.cancel_event.set()
        return self.cancel_event.is_set()


def activate(ctx: JobContext) -> object:
    _running[ctx.job_id] = ctx
    return _current.set(ctx)


def deactivate(ctx: JobContext, token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
    if _running.get(ctx.job_id) is ctx:
        del _running[ctx.job_id]


def register(ctx: JobContext) -> None:
    """Make ``ctx`` reachable by ``signal_cancel`` before it runs (``activate`` does too)."""
    _running[ctx.job_id] = ctx


def running_context(job_id: str) -> JobContext | None:
    """The context of ``job_id`` if it runs in this process."""
    return _running.get(job_id)


def signal_cancel(job_id: str) -> None:
    """Tell a job running in this process that it was cancelled (the file says so too)."""
    ctx = _running.get(job_id)
    if ctx is not None:
        ctx.cancel_event.set()


def current_job_id() -> str | None:
    """Id of the job running on this thread, None outside a job."""
    ctx = _current.get()
    return ctx.job_id if ctx else None


def report_progress(progress: float | None = None, message: str | None = None, **meta: Any) -> None:
    """Report a running job's progress (0.0..1.0), a message and extra ``meta`` values.

    Throttled (``progress_interval``, default 0.1 s per job): calls in between only
    keep their values in memory, and the latest values are always written before
    the job ends. Raises ``JobCancelled`` once the job's cancellation was requested.
    Outside a job: does nothing.

    Examples:
        >>> report_progress(0.5, "outside any job: a no-op")
    """
    ctx = _current.get()
    if ctx is None:
        return
    if progress is not None:
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):
            raise TypeError(f"progress must be a number, not {type(progress).__name__}")
        if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
            raise ValueError(f"progress must be between 0.0 and 1.0, got {progress!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"message must be a str, not {type(message).__name__}")
    if meta:
        freeze(meta, _path="meta")  # refuse unserialisable values now, not at a later flush
    ctx.record(progress, message, meta)  # kept even if we raise: the end of the job writes it
    if ctx.cancel_event.is_set():
        raise JobCancelled(f"job {ctx.job_id!r} was cancelled")
    if time.monotonic() - ctx.last_write < ctx.interval:
        return
    try:
        ctx.flush()
    except WRITE_ERRORS:
        # Status is a side channel: a failing disk or server must not kill the work.
        # The values stay pending; a later write (the final one at the latest) has them.
        ctx.note_write_failure("a progress write")
        return
    ctx.note_write_success()
    if ctx.cancel_event.is_set():
        raise JobCancelled(f"job {ctx.job_id!r} was cancelled")


def is_cancelled() -> bool:
    """True once cancellation of the current job was requested (False outside a job).

    Checks the record at most once per progress interval, so it is cheap in a loop.
    """
    ctx = _current.get()
    return False if ctx is None else ctx.check_cancel()
