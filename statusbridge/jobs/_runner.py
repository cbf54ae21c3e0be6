"""The code that runs one job, in whatever thread or process the executor picked.

Everything it needs travels in a picklable ``RunSpec``; a worker process writes
its own status (``owner`` = its own host:pid), so a process pool needs no channel
back to the queue. A thread job may instead be *claimed* from its queue's
memory (``RunSpec.claim``) when its pending record was never written: it then
starts without a write, and its record is created by its first write. A thread
job hands its end to its queue (``Outcome``, ``RunSpec.write_behind``): the
worker takes its next job at once, and the queue writes the ends of the jobs
that ended meanwhile together.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from statusbridge.errors import JobCancelled
from statusbridge.jobs._context import JobContext, activate, deactivate
from statusbridge.jobs._liveness import this_process
from statusbridge.jobs._write_retries import WRITE_ERRORS
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._frozen import thaw
from statusbridge.record._model import utc_now
from statusbridge.store import StatusStore

__all__ = ["TRACEBACK_LIMIT", "Outcome", "RunSpec", "run_job"]

logger = logging.getLogger(__name__)

TRACEBACK_LIMIT = 8000

# How long the heartbeat thread waits for new jobs before it ends.
IDLE_LINGER = 1.0


@dataclass(frozen=True)
class RunSpec:
    folder: str
    job_id: str
    func: Callable[[Any], Any]
    progress_interval: float = 0.1
    heartbeat_interval: float = 5.0
    # The queue's own store, for jobs run in its process; not sent to worker
    # processes, which open one store per folder for their lifetime.
    store: StatusStore | None = field(default=None, compare=False)
    # In-process only: takes the job from the queue's memory if its pending record
    # was never written, starting ``ctx`` unwritten; returns its params then, else
    # None (the job is then started from its record, as in a worker process).
    claim: Callable[[JobContext], tuple[Any] | None] | None = field(default=None, compare=False)
    # A job whose PENDING record exists (a batch's): start it without writing RUNNING,
    # which its first write does this many seconds later (0: RUNNING is written at start).
    defer_start: float = 0.0
    # In-process only: the job's end is handed back as an ``Outcome`` for its queue to
    # write, with the other jobs that ended meanwhile, instead of written by the worker.
    write_behind: bool = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["store"] = None
        state["claim"] = None
        state["write_behind"] = False  # a worker process writes its own end
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


_stores: dict[str, StatusStore] = {}
_stores_lock = threading.Lock()


def _store_for(folder: str) -> StatusStore:
    """One store per folder per process: lock descriptors are opened once, not per job."""
    with _stores_lock:
        store = _stores.get(folder)
        if store is None:
            store = _stores[folder] = StatusStore(folder)
        return store


class _Heartbeats:
    """One thread per process writes a heartbeat for every running job that has been quiet."""

    def __init__(self) -> None:
        # Running jobs, by id(context): run_job removes its own in a ``finally``.
        self._jobs: dict[int, tuple[JobContext, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next_look = 0.0  # monotonic time the thread next looks at its jobs
        self._thread: threading.Thread | None = None

    def add(self, ctx: JobContext, interval: float) -> None:
        with self._lock:
            self._jobs[id(ctx)] = (ctx, interval)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="statusbridge-heartbeat", daemon=True
                )
                self._thread.start()
            elif not ctx.written and ctx.next_write_due(interval) < self._next_look:
                self._wake.set()  # its first write is due before the thread's next look

    def remove(self, ctx: JobContext) -> None:
        with self._lock:
            self._jobs.pop(id(ctx), None)

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before the look: a later add() wakes the next wait
            with self._lock:
                jobs = list(self._jobs.values())
                # Until the next wait is planned, any job added must wake it: this
                # look does not include that job.
                self._next_look = math.inf
            if not jobs:
                # Linger a moment: short jobs come and go, and a thread per job costs.
                with self._lock:
                    self._next_look = time.monotonic() + IDLE_LINGER
                if self._wake.wait(IDLE_LINGER):
                    continue
                with self._lock:
                    if not self._jobs:
                        self._thread = None
                        return
                continue
            now = time.monotonic()
            for ctx, interval in jobs:
                if now >= ctx.next_write_due(interval):
                    try:
                        ctx.flush()
                    except Exception:  # noqa: BLE001 - logged (rate-limited) there
                        ctx.note_write_failure("a heartbeat write")
                    else:
                        ctx.note_write_success()
            # Heartbeats are checked at half their interval; a job not written yet
            # is written when its first write is due.
            now = time.monotonic()
            wait = min(
                (
                    interval / 2 if ctx.written else ctx.next_write_due(interval) - now
                    for ctx, interval in jobs
                ),
                default=1.0,
            )
            wait = min(max(wait, 0.005), 1.0)
            with self._lock:
                self._next_look = now + wait
            self._wake.wait(wait)


_heartbeats = _Heartbeats()


def run_job(spec: RunSpec) -> BatchJob | Outcome | None:
    """Run one job to its end and write its final status; returns the last record written,
    or (``write_behind``) the ``Outcome`` its queue is to write.

    None when it did not run and wrote nothing (its record was gone).
    """
    store = spec.store if spec.store is not None else _store_for(spec.folder)
    ctx = JobContext(store, spec.job_id, interval=spec.progress_interval)
    claimed = spec.claim(ctx) if spec.claim is not None else None
    if claimed is not None:
        (params,) = claimed
    elif spec.defer_start > 0:
        try:
            job = _start_deferred(store, ctx, spec.defer_start)
        except WRITE_ERRORS as exc:
            raise StartNotWritten(spec.job_id, f"{type(exc).__name__}: {exc}") from exc
        if job is None or job.status is not BatchStatus.PENDING:
            return job
        params = job.params
    else:
        try:
            job = _start_from_record(store, spec.job_id)
        except WRITE_ERRORS as exc:
            raise StartNotWritten(spec.job_id, f"{type(exc).__name__}: {exc}") from exc
        if job is None or job.status is not BatchStatus.RUNNING:
            return job
        params = job.params
    token = activate(ctx)
    _heartbeats.add(ctx, spec.heartbeat_interval)
    final: dict[str, Any]
    try:
        result = spec.func(thaw(params))
        final = {"status": BatchStatus.COMPLETED, "result": result, "progress": 1.0}
    except JobCancelled:
        final = {"status": BatchStatus.CANCELLED}
    except Exception as exc:  # noqa: BLE001 - any error of user code fails the job, with its traceback
        tb = traceback.format_exc()
        final = {
            "status": BatchStatus.FAILED,
            "error_message": f"{type(exc).__name__}: {exc}",
            "meta": {"traceback": tb[-TRACEBACK_LIMIT:]},
        }
    finally:
        _heartbeats.remove(ctx)
        deactivate(ctx, token)
    if spec.write_behind and spec.store is not None:
        return _ended(ctx, final)
    return _finish(store, ctx, final)


def _start_from_record(store: StatusStore, job_id: str) -> BatchJob | None:
    """PENDING -> RUNNING under the job's lock, unless it was cancelled meanwhile."""
    me = this_process()

    def start(current: BatchJob | None) -> dict[str, Any] | None:
        if current is None or current.status is not BatchStatus.PENDING:
            return None
        if current.cancel_requested:
            return {"status": BatchStatus.CANCELLED, "message": "cancelled before it started"}
        return {
            "status": BatchStatus.RUNNING,
            **me.fields(),
            "heartbeat_at": utc_now(),
        }

    return store.modify(job_id, start)


def _start_deferred(store: StatusStore, ctx: JobContext, delay: float) -> BatchJob | None:
    """Start from a PENDING record without a write: RUNNING is written ``delay`` from now.

    Returns the record read (PENDING: run it); a record that is gone or final is not run,
    and one whose cancel was asked is made CANCELLED here, as ``_start_from_record`` does.
    A cancel that reaches the record meanwhile is found by the job's first write.
    """
    job = store.read(ctx.job_id)
    if job is None or job.status is not BatchStatus.PENDING:
        return job
    if job.cancel_requested:
        return _start_from_record(store, ctx.job_id)
    now = utc_now()
    ctx.start_unwritten(
        {"status": BatchStatus.RUNNING, "started_at": now, "heartbeat_at": now,
         **this_process().fields()},
        write_after=delay,
        over_record=True,
    )  # fmt: skip
    return job


@dataclass(frozen=True)
class Outcome:
    """A thread job's end, handed to its queue's supervisor to write (``write_behind``).

    The supervisor writes the ends of all the jobs that ended meanwhile at once (one
    transaction on SQLite: one commit, and one wake-up of every cache, for them all),
    and the worker takes its next job instead of waiting for a write.
    """

    job_id: str
    fields: dict[str, Any]
    # Started over a PENDING record (or a batch's job) without writing RUNNING: a record
    # made final meanwhile (cancelled while it looked pending) keeps its status.
    keeps_final: bool

    def change(self, kept: list[BatchJob]) -> Callable[[BatchJob | None], dict[str, Any] | None]:
        """The write; a final record it leaves alone is appended to ``kept``."""

        def change(current: BatchJob | None) -> dict[str, Any] | None:
            if self.keeps_final and current is not None and current.is_finished:
                kept.append(current)
                return None
            return self.fields

        return change

    def failed_instead(self, exc: Exception) -> dict[str, Any]:
        """The write in its place when the end cannot be stored (a result JSON cannot hold)."""
        fields = {k: v for k, v in self.fields.items() if k not in ("result", "meta", "progress")}
        return {
            **fields,
            "status": BatchStatus.FAILED,
            "error_message": f"job returned a result that cannot be stored: {exc}",
            "heartbeat_at": utc_now(),
        }


def _ended(ctx: JobContext, final: dict[str, Any]) -> Outcome:
    with ctx.write_lock:  # no heartbeat may land after this
        ctx.finished = True
        keeps_final = (ctx.over_record or ctx.named) and not ctx.written
        return Outcome(ctx.job_id, _final_fields(ctx, final), keeps_final)


def _finish(store: StatusStore, ctx: JobContext, final: dict[str, Any]) -> BatchJob:
    with ctx.write_lock:  # no heartbeat may land after this
        ctx.finished = True
        return _write_final(store, ctx, final)


def _final_fields(ctx: JobContext, final: dict[str, Any]) -> dict[str, Any]:
    fields = ctx.take_pending()
    meta = {**fields.pop("meta", {}), **final.pop("meta", {})}
    fields.update(final)
    if meta:
        fields["meta"] = meta
    fields["heartbeat_at"] = utc_now()
    return fields


def _write_final(store: StatusStore, ctx: JobContext, final: dict[str, Any]) -> BatchJob:
    fields = _final_fields(ctx, final)
    try:
        try:
            job = _write_outcome(store, ctx, fields)
        except (TypeError, ValueError) as exc:
            # The result (or a meta value) cannot be stored: the job fails, saying why.
            logger.warning("job %s: cannot store its outcome: %s", ctx.job_id, exc)
            fields = {
                **ctx.take_pending(),  # a record never written yet is created whole
                "status": BatchStatus.FAILED,
                "error_message": f"job returned a result that cannot be stored: {exc}",
                "heartbeat_at": utc_now(),
            }
            job = _write_outcome(store, ctx, fields)
    except WRITE_ERRORS as exc:
        raise OutcomeNotWritten(ctx.job_id, fields, f"{type(exc).__name__}: {exc}") from exc
    ctx.mark_written()
    return job


def _write_outcome(store: StatusStore, ctx: JobContext, fields: dict[str, Any]) -> BatchJob:
    if not (ctx.over_record or ctx.named) or ctx.written:
        return store.update(ctx.job_id, **fields)
    # Started over a PENDING record without writing RUNNING: a record made final
    # meanwhile (cancelled while it looked pending) keeps its status.
    kept: list[BatchJob] = []

    def change(current: BatchJob | None) -> dict[str, Any] | None:
        if current is not None and current.is_finished:
            kept.append(current)
            return None
        return fields

    job = store.modify(ctx.job_id, change)
    return job if job is not None else kept[0]


class OutcomeNotWritten(Exception):
    """A job ended but its final write failed (a full disk, a server away).

    Carries the fields that write held, back to the job's queue (also from a
    worker process: it pickles), which keeps them and writes them when it can,
    instead of losing the job's outcome.
    """

    def __init__(self, job_id: str, fields: dict[str, Any], error: str) -> None:
        super().__init__(job_id, fields, error)
        self.job_id = job_id
        self.fields = fields
        self.error = error

    def __str__(self) -> str:
        return f"job {self.job_id}: its outcome could not be written: {self.error}"


class StartNotWritten(Exception):
    """A job could not be started: writing its RUNNING record failed, so it never ran.

    Its queue starts it again a little later rather than failing work that a
    short outage (a full disk, a server restarting) only delayed.
    """

    def __init__(self, job_id: str, error: str) -> None:
        super().__init__(job_id, error)
        self.job_id = job_id
        self.error = error

    def __str__(self) -> str:
        return f"job {self.job_id}: could not be started: {self.error}"
