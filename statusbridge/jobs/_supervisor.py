"""The supervisor: one thread per queue that decides how each job submitted there ends.

A future's done-callback only posts ``(job_id, future)`` to a ``SimpleQueue``;
the supervisor does everything else: final records (a thread job's end is
written here, with the others that ended meanwhile: ``write_ended``), pool replacement,
re-submitting jobs a dead pool never started, starts and writes to try again,
retention and heartbeat checks. No callback ever takes a lock, so nothing can
deadlock with a pool that runs callbacks under its own lock (CPython >= 3.12).

Ownership: the loop holds the queue only weakly, so a queue dropped without
``shutdown()`` is collected once its jobs are done, and its finalizer
releases the pool, the cache, the store and the thread (``_parts.Owned``).
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from statusbridge.jobs._batch_feed import CANCELLED_BY_BATCH, BatchFeed, pending_fields
from statusbridge.jobs._deferred import CANCELLED_BY_MARKER
from statusbridge.jobs._liveness import is_owner_alive, local_pid
from statusbridge.jobs._parts import Parts
from statusbridge.jobs._pool import BrokenExecutor, describe_exit
from statusbridge.jobs._runner import Outcome, OutcomeNotWritten, StartNotWritten
from statusbridge.jobs._submissions import Submission
from statusbridge.jobs._write_retries import WRITE_ERRORS
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._model import FIELD_NAMES

__all__ = ["DRAIN", "STOP", "WAKE", "Supervisor", "supervise"]

logger = logging.getLogger(__name__)

# A job that a dead pool never started runs again on the new pool, at most this
# many times in all (a job whose mere unpickling kills its worker must not loop).
MAX_ATTEMPTS = 3

RETENTION_RETRY = 0.05

# After the last finished job posted, the supervisor waits this long before it sleeps on
# its queue: jobs that end meanwhile (thousands a second from busy workers) are handled
# in one go instead of one wake-up each. A job's end waits at most this for its handling.
DONE_GAP = 0.002

# Jobs' ends written in one go at most (``write_ended``): one transaction on SQLite.
ENDED_AT_ONCE = 256

STOP = object()  # release everything once idle
WAKE = object()  # something waits in memory, or a write is to be tried again
DRAIN = object()  # stop after what was posted before
FEED_DONE = object()  # a batch feed ended (the queue may be idle)


class Supervisor:
    """Handles the events of one queue; also the target its batch feeds report to."""

    def __init__(self, parts: Parts, events: stdlib_queue.SimpleQueue[Any]) -> None:
        self.parts = parts
        self.store = parts.store  # for the feeds
        self.events = events
        self._ended: list[tuple[Submission, Outcome]] = []  # to write (``write_ended``)
        self.release: Callable[[], Any] = lambda: None  # the queue's finalizer, once made

    @property
    def cancel_pending(self) -> bool:
        return self.parts.submissions.cancel_pending

    def wake(self) -> None:
        self.events.put(WAKE)

    # -- a job is done ------------------------------------------------------------
    def handle_done(self, job_id: str, future: Future[Any]) -> None:
        p = self.parts
        sub = p.submissions.get(job_id)
        if sub is None or sub.future is not future:
            return  # a stale future (the job was re-submitted since)
        exc = None if future.cancelled() else future.exception()
        if future.cancelled():
            why = "cancelled before it started"
            p.deferred.write_now(job_id, status=BatchStatus.CANCELLED, message=why)
            self.mark_if_unfinished(job_id, BatchStatus.CANCELLED, why)
        elif isinstance(exc, BrokenExecutor):
            if self._after_broken_pool(sub):
                return  # runs again on the new pool
        elif isinstance(exc, StartNotWritten) and p.submissions.start_again_later(sub):
            self.wake()
            # The first try says why; the next ones (up to START_TRIES) only add noise.
            log = logger.warning if sub.attempts == 1 else logger.debug
            log("%s; starting it again later (try %d)", exc, sub.attempts)
            return  # still busy here: ``write_due`` submits it again
        elif isinstance(exc, OutcomeNotWritten):
            logger.warning("%s; the queue writes it when it can", exc)
            p.retries.keep(job_id, partial(_outcome, exc.fields))
        elif exc is not None:
            # run_job itself could not run: an unpicklable function or result, ...
            logger.error("job %s: worker failed: %s", job_id, exc)
            self.mark_if_unfinished(
                job_id,
                BatchStatus.FAILED,
                f"worker failed: {type(exc).__name__}: {exc}",
                create=self._memory_record(sub),
            )
        else:
            # What the worker wrote last: a finished record spares reading it back.
            last = future.result()
            if isinstance(last, Outcome):
                self._ended.append((sub, last))  # written with the others (``write_ended``)
                return
            if isinstance(last, BatchJob) and last.is_finished:
                self.forget(job_id, sub, last)
                return
        self.forget(job_id, sub)

    @property
    def ended(self) -> int:
        """How many ends of jobs wait for ``write_ended``."""
        return len(self._ended)

    def write_ended(self) -> None:
        """Write the ends of the jobs that ended since the last call, all at once."""
        ended, self._ended = self._ended, []
        if not ended:
            return
        kept: list[list[BatchJob]] = [[] for _ in ended]
        changes = [(o.job_id, o.change(k)) for (_sub, o), k in zip(ended, kept, strict=True)]
        try:
            outcomes = self.parts.store.modify_many(changes)
        except Exception as exc:  # noqa: BLE001 - each job is told, below
            outcomes = [exc] * len(ended)
        for (sub, outcome), written, k in zip(ended, outcomes, kept, strict=True):
            try:
                self._after_end(sub, outcome, written, k)
            except Exception:
                logger.exception("job %s: handling its end failed", outcome.job_id)
                self.forget(outcome.job_id, sub)  # (never left busy: the queue may go idle)

    def _after_end(
        self,
        sub: Submission,
        outcome: Outcome,
        written: BatchJob | Exception | None,
        kept: list[BatchJob],
    ) -> None:
        """What ``write_ended``'s write of one job's end came to."""
        p = self.parts
        job_id = outcome.job_id
        if isinstance(written, (TypeError, ValueError)):
            # The result (or a meta value) cannot be stored: the job fails, saying why.
            logger.warning("job %s: cannot store its outcome: %s", job_id, written)
            failed = outcome.failed_instead(written)
            p.retries.write_or_keep(job_id, partial(_outcome, failed), "its outcome")
            written = None
        elif isinstance(written, WRITE_ERRORS):
            logger.warning(
                "job %s: writing its outcome failed (%s: %s); the queue writes it when it can",
                job_id,
                type(written).__name__,
                written,
            )
            p.retries.keep(job_id, partial(_outcome, outcome.fields))
            written = None
        elif isinstance(written, Exception):
            logger.error("job %s: cannot write its outcome", job_id, exc_info=written)
            why = f"its outcome could not be written: {type(written).__name__}: {written}"
            self.mark_if_unfinished(
                job_id, BatchStatus.FAILED, why, create=self._memory_record(sub)
            )
            written = None
        elif written is None and kept:
            written = kept[-1]  # a final record found there, left as it was
        if p.submissions.get(job_id) is sub:  # (not a newer run of the same id)
            self.forget(job_id, sub, written)

    def _after_broken_pool(self, sub: Submission) -> bool:
        """A worker of ``sub``'s pool died. Re-submit the job if it never started (True)."""
        p = self.parts
        replaced = p.pool.replace(sub.executor)
        codes = p.pool.exit_codes(sub.executor) if p.pool.owned else {}
        job_id = sub.spec.job_id
        try:
            current = p.store.read(job_id)
        except Exception:
            logger.exception("job %s: cannot read its record after its pool broke", job_id)
            current = None
        if current is None or current.is_finished:
            return False
        if current.status is BatchStatus.PENDING:
            retry = p.pool.owned and not p.submissions.closed and not current.cancel_requested
            if retry and sub.attempts < MAX_ATTEMPTS:
                try:
                    p.submissions.start(sub.spec, attempts=sub.attempts + 1)
                except Exception as exc:  # noqa: BLE001 - recorded in the job, and logged
                    logger.warning("job %s: could not re-submit: %s", job_id, exc)
                else:
                    return True
            why = (
                f"its worker pool broke {sub.attempts} time(s) before it started"
                if retry
                else "its worker pool broke before it started"
            )
            self.mark_if_unfinished(job_id, BatchStatus.FAILED, why)
            return False
        # RUNNING in a process of the dead pool.
        pid = local_pid(current)
        if pid in codes:
            why = f"worker process died ({describe_exit(codes[pid])})"
        elif pid is not None and is_owner_alive(current, now=p.clock(), heartbeat_timeout=0):
            # Not a worker of that pool (or not yet gone): the heartbeat check decides later.
            return False
        else:
            why = "worker process died (exit code unknown)"
        if not replaced:
            why += "; its pool cannot be replaced"
        self.mark_if_unfinished(job_id, BatchStatus.FAILED, why, only_owner=current.owner)
        return False

    def forget(self, job_id: str, sub: Submission, final: BatchJob | None = None) -> None:
        self.parts.housekeeping.note_done(job_id)
        self.parts.submissions.forget(job_id, sub)
        # Before the idle hooks: they judge batches by what the queue shows.
        self.parts.overlay.settle(job_id, final)
        self.parts.submissions.check_idle()

    def _memory_record(self, sub: Submission) -> dict[str, Any] | None:
        """The fields of a job run from memory that may have no record yet (else None)."""
        if sub.spec.claim is None:
            return None
        local = self.parts.overlay.get(sub.spec.job_id)
        if local is None or local.is_finished:
            return None
        fields = {name: getattr(local, name) for name in FIELD_NAMES}
        fields["progress"] = local.reported_progress
        for name in ("id", "seq", "updated_at"):
            del fields[name]
        return fields

    def mark_if_unfinished(
        self,
        job_id: str,
        status: BatchStatus,
        message: str,
        *,
        only_owner: str | None = None,
        create: dict[str, Any] | None = None,
    ) -> None:
        """Give an unfinished record ``status``; ``create``: the record to write if none exists."""

        def change(current: BatchJob | None) -> dict[str, Any] | None:
            if current is None and create is None:
                return None
            if current is not None and current.is_finished:
                return None
            if current is not None and only_owner is not None and current.owner != only_owner:
                return None
            if status is BatchStatus.FAILED:
                return {**(create or {}), "status": status, "error_message": message}
            return {**(create or {}), "status": status, "message": message}

        self.parts.retries.write_or_keep(job_id, change, status.value)

    # -- writes and starts to try again -------------------------------------------
    def restart_due(self, *, force: bool = False) -> None:
        p = self.parts
        for sub in p.submissions.restarts_due(force=force):
            job_id = sub.spec.job_id
            status = BatchStatus.FAILED
            why = "could not be started: its record could not be written"
            if p.submissions.cancel_pending:  # shutdown(cancel_pending=True): it is pending
                status, why = BatchStatus.CANCELLED, "cancelled before it started"
            elif not p.submissions.closed:
                try:
                    p.submissions.start(sub.spec, attempts=sub.attempts + 1)
                except Exception as exc:  # noqa: BLE001 - recorded in the job, and logged
                    logger.warning("job %s: could not submit it again: %s", job_id, exc)
                    why = f"could not be submitted again: {type(exc).__name__}: {exc}"
                else:
                    continue
            self.mark_if_unfinished(job_id, status, why)
            self.forget(job_id, sub)

    def write_due(self) -> float | None:
        """Write what is due (deferred records, kept changes, starts); when the next is due."""
        p = self.parts
        self.restart_due()
        due = [p.deferred.write_overdue(), p.retries.write_due(), p.submissions.next_restart()]
        return min((t for t in due if t is not None), default=None)

    def write_remaining(self) -> None:
        """Before the store is let go: a last try at what failed writes left in memory."""
        self.parts.deferred.write_all()
        self.restart_due(force=True)  # closed: each fails, saying why
        self.parts.retries.flush()

    # -- the batch feeds' target ------------------------------------------------------
    def note_recorded(self, jobs: Iterable[BatchJob]) -> None:
        """Records the batch feed wrote: shown by ``get_job_status`` until the cache has them."""
        self.parts.overlay.show(jobs)

    def start_recorded(self, func: Callable[[Any], Any], job: BatchJob) -> None:
        """Start a job whose PENDING record the batch feed wrote (on the feed's thread)."""
        try:
            spec = self.parts.specs.spec(job.id, func, recorded=True)
            self.parts.submissions.start(spec, attempts=1)
        except Exception as exc:  # noqa: BLE001 - recorded in the job
            if self.cancel_pending:
                self.mark_if_unfinished(job.id, BatchStatus.CANCELLED, CANCELLED_BY_BATCH)
            else:
                why = f"could not submit: {type(exc).__name__}: {exc}"
                self.mark_if_unfinished(job.id, BatchStatus.FAILED, why)
            self.parts.overlay.settle(job.id)

    @property
    def starts_in_memory(self) -> bool:
        """Whether a batch's jobs start from memory (thread workers, ``record_delay`` > 0)."""
        return not self.parts.pool.pickles and self.parts.specs.timing.record_delay > 0

    def start_in_memory(
        self,
        func: Callable[[Any], Any],
        jobs: Sequence[tuple[str, Any]],
        batch_id: str,
        stopped: Callable[[str | None], bool],
    ) -> None:
        """Start a batch's jobs from memory, as ``BatchQueue.submit`` starts its own: a
        PENDING record is written only for a job still waiting after ``record_delay``
        (on the feed's thread; see ``DeferredRecords.claim_named``)."""
        p = self.parts
        now = p.clock()
        held = {
            job_id: {**pending_fields(params, batch_id), "created_at": now}
            for job_id, params in jobs
        }
        p.overlay.show([BatchJob(id=i, seq=1, updated_at=now, **f) for i, f in held.items()])
        claim = partial(p.deferred.claim_named, stopped=stopped)
        for job_id, fields in held.items():
            p.deferred.hold(job_id, fields)
            try:
                p.submissions.start(p.specs.spec(job_id, func, claim=claim), attempts=1)
            except Exception as exc:  # noqa: BLE001 - recorded in the job
                if self.cancel_pending:
                    change: dict[str, Any] = dict(CANCELLED_BY_MARKER)
                else:
                    why = f"could not submit: {type(exc).__name__}: {exc}"
                    change = {"status": BatchStatus.FAILED, "error_message": why}
                p.deferred.write_now(job_id, **change)
                p.overlay.settle(job_id)

    def feed_ended(self, feed: BatchFeed) -> None:
        self.parts.submissions.remove_feed(feed)
        self.events.put(FEED_DONE)


def supervise(
    queue_ref: weakref.ref[Any],
    supervisor: Supervisor,
    stopped: threading.Event,
    interval: float,
) -> None:
    """The supervisor loop; ends when the queue is released or collected."""
    events, parts = supervisor.events, supervisor.parts
    next_maintenance = time.monotonic() + interval
    retention_retry: float | None = None
    unwritten_due: float | None = None
    stopping = False
    while not stopped.is_set():
        deadline = min(
            next_maintenance,
            retention_retry or next_maintenance,
            unwritten_due or next_maintenance,
        )
        try:
            item = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except stdlib_queue.Empty:
            item = None
        if stopped.is_set() or (item is None and queue_ref() is None):
            # Released (its finalizer posts DRAIN first: what was posted before is handled).
            return
        try:
            if item is DRAIN:
                supervisor.write_ended()
                supervisor.write_remaining()
                return
            if item is STOP:
                stopping = True
            elif item is WAKE:
                unwritten_due = None  # look now
            elif item is FEED_DONE:
                parts.submissions.check_idle()
            elif item is not None:
                supervisor.handle_done(*item)
            if supervisor.ended and (events.empty() or supervisor.ended >= ENDED_AT_ONCE):
                supervisor.write_ended()
            if item is WAKE or (unwritten_due is not None and time.monotonic() >= unwritten_due):
                unwritten_due = supervisor.write_due()
            done = item is not None and item is not STOP and item is not WAKE
            due = retention_retry is not None and time.monotonic() >= retention_retry
            if (done and events.empty()) or due:
                # After a burst of finished jobs: one retention pass.
                again = parts.housekeeping.after_jobs_done()
                retention_retry = time.monotonic() + RETENTION_RETRY if again else None
            if time.monotonic() >= next_maintenance:
                parts.housekeeping.maintain()
                next_maintenance = time.monotonic() + interval
            if stopping and parts.submissions.idle:
                supervisor.write_remaining()
                supervisor.release()
                return
            if done and events.empty():
                time.sleep(DONE_GAP)  # jobs ending meanwhile are handled in one go
        except Exception:
            logger.exception("statusbridge queue supervisor: an error (will go on)")


def _outcome(fields: dict[str, Any], current: BatchJob | None) -> dict[str, Any] | None:
    """A job's final write, retried: never over a record someone else finished, nor
    in place of a removed one (unless ``fields`` is a whole record: a job run from
    memory whose record was never written)."""
    if current is None:
        return fields if "created_at" in fields else None
    return None if current.is_finished else fields
