"""A queue's life: its supervisor thread started, and its end (``shutdown``, ``stop_now``).

Whatever a queue owns is released exactly once, by a ``weakref.finalize`` on
the queue: from ``shutdown``, from the supervisor once a ``shutdown(wait=False)``
has let the last job end, or when a dropped queue is collected.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from statusbridge.jobs._parts import Owned, Parts
from statusbridge.jobs._supervisor import DRAIN, STOP, Supervisor, supervise
from statusbridge.jobs._write_retries import WRITE_ERRORS
from statusbridge.record import BatchJob, BatchStatus

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)

Cancel = Callable[[str], bool]
Lookup = Callable[[str], BatchJob | None]


class Lifecycle:
    """Starts a queue's supervisor thread and ends the queue."""

    def __init__(
        self,
        queue: object,
        parts: Parts,
        events: stdlib_queue.SimpleQueue[Any],
        *,
        owns_cache: bool,
        maintenance_interval: float,
    ) -> None:
        self._parts = parts
        self._events = events
        self._owns_cache = owns_cache
        self._draining = False  # a shutdown(wait=True) is under way
        self.supervisor = Supervisor(parts, events)
        stopped = threading.Event()
        self.thread = threading.Thread(
            target=supervise,
            args=(weakref.ref(queue), self.supervisor, stopped, maintenance_interval),
            name="statusbridge-queue",
            daemon=True,
        )
        owned = Owned(
            parts.pool,
            parts.cache if owns_cache else None,
            parts.housekeeping.unsubscribe,
            parts.store,
            events,
            stopped,
            self.thread,
            partial(events.put, DRAIN),
        )
        self.release = weakref.finalize(queue, owned.release)
        self.supervisor.release = self.release
        self.thread.start()

    def shutdown(self, wait: bool, *, cancel_pending: bool, cancel: Cancel, lookup: Lookup) -> None:
        """``BatchQueue.shutdown``; ``cancel`` and ``lookup`` are the queue's."""
        subs = self._parts.submissions
        if self._draining and not wait and not cancel_pending:
            return  # a shutdown(wait=True) is under way (an idle hook calls this meanwhile)
        if wait:
            # Until it is done, the supervisor must not release the cache early: the
            # final rescan below shows how every job ended.
            self._draining = True
        if not cancel_pending and not subs.closed:
            # Jobs waiting to be started again (their start could not be written)
            # are queued jobs: they go to the pool now, before it stops taking any.
            self.supervisor.restart_due(force=True)
        subs.closed = True
        subs.cancel_pending = subs.cancel_pending or cancel_pending
        if wait:
            # Batches being fed are queued jobs: fed to the pool (or, with
            # cancel_pending, recorded CANCELLED) before the pool stops.
            subs.join_feeds(None)
        if cancel_pending:
            for job_id in subs.ids():
                job = lookup(job_id)
                if job is not None and job.status is BatchStatus.PENDING:
                    _cancel_logged(cancel, job_id)
        if not subs.feeds or cancel_pending:
            # (A batch still being fed keeps the pool; the supervisor releases it after.)
            self._parts.pool.shutdown(wait=wait, cancel_futures=cancel_pending)
        if not wait:
            self._events.put(STOP)  # the supervisor releases once the jobs are done
            return
        # Every future is done and has posted its event: let the supervisor
        # record them all, then stop it.
        self._events.put(DRAIN)
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=30)
        if self._owns_cache and self.release.alive:
            # Catch up with the final records before the watch stops, so that
            # reads after shutdown show how every job ended.
            self._parts.cache.rescan()
        self.release()

    def cancel_all(self, job_ids: list[str], *, cancel: Cancel, lookup: Lookup) -> None:
        """Ask every unfinished one of these jobs to stop (``stop_now``)."""
        for job_id in job_ids:
            job = lookup(job_id)
            if job is not None and not job.status.is_finished:
                _cancel_logged(cancel, job_id)

    def kill_workers(self) -> None:
        """Kill the worker processes whose jobs ignored their cancel (``stop_now``)."""
        killed = self._parts.pool.kill_workers()
        if killed:
            logger.warning(
                "statusbridge: killed worker process(es) %s whose jobs ignored their cancel",
                ", ".join(map(str, killed)),
            )


def _cancel_logged(cancel: Cancel, job_id: str) -> None:
    try:
        cancel(job_id)
    except WRITE_ERRORS:
        # Shutting down goes on: the pool drops the job, whose CANCELLED
        # record is then kept and retried like any write.
        logger.warning("job %s: its cancel could not be written", job_id)
