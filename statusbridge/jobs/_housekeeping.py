"""A queue's housekeeping: jobs whose worker died, abandoned pending jobs, retention.

``maintain`` runs at start and every ``maintenance_interval``; count-based
retention also runs right after jobs finish (``after_jobs_done``). Retention
asks the queue's retention hooks which batches to keep for now, and never
removes a record of a batch that still runs. Owns its lock, the finish order
and the jobs done here that the cache has not shown finished yet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, overload

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.jobs._liveness import LocalClock, Sightings, is_owner_alive, local_pid
from statusbridge.jobs._overlay import Overlay
from statusbridge.jobs._retention import FinishOrder, retention_lag
from statusbridge.jobs._submissions import Submissions, weak_hook
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore
from statusbridge.store._retention import RetentionPolicy

__all__ = [
    "UNSEEN_PATIENCE",
    "Housekeeping",
    "LimitField",
    "Limits",
    "MaintenanceReport",
    "RetentionHook",
]

logger = logging.getLogger(__name__)

# How long the supervisor keeps looking for the cache to show a finished job
# before leaving its retention to the next maintenance pass.
UNSEEN_PATIENCE = 5.0

RetentionHook = Callable[[Snapshot], Iterable[str]]
T = TypeVar("T")


@dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain()`` pass did."""

    died: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class HasLimits(Protocol):
    limits: Limits


@dataclass
class Limits:
    """When a job is given up on, and which finished records are kept."""

    heartbeat_timeout: float
    # A pending job whose submitter runs on another machine (or ran before a
    # reboot) cannot be asked whether it is alive: it is abandoned after this.
    pending_timeout: float
    max_completed_jobs: int
    retention_hours: float | None


class LimitField(Generic[T]):
    """A queue attribute that reads and sets one of its ``Limits`` (``limits`` on the queue),
    so that a change (``queue.max_completed_jobs = 0``) takes effect at the next pass."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> LimitField[T]: ...

    @overload
    def __get__(self, obj: HasLimits, objtype: type | None = None) -> T: ...

    def __get__(self, obj: HasLimits | None, objtype: type | None = None) -> T | LimitField[T]:
        if obj is None:
            return self  # the class's attribute (documentation tools read it)
        value: T = getattr(obj.limits, self._name)
        return value

    def __set__(self, obj: HasLimits, value: T) -> None:
        setattr(obj.limits, self._name, value)


class Housekeeping:
    def __init__(
        self,
        store: StatusStore,
        cache: StatusCache,
        overlay: Overlay,
        submissions: Submissions,
        *,
        limits: Limits,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._cache = cache
        self._overlay = overlay
        self._submissions = submissions
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], RetentionHook | None]] = []
        self._settles: list[Callable[[], Callable[[Snapshot], object] | None]] = []
        self._done_unseen: dict[str, float] = {}  # done here, not yet finished in the cache
        local = LocalClock(clock)  # ages as this process saw them: never a writer's clock
        self._finish_order = finish_order = FinishOrder(local)
        self._sightings = sightings = Sightings(local)

        def observe(snap: Snapshot, changed: frozenset[str]) -> None:
            finish_order(snap, changed)
            sightings(snap, changed)

        self.unsubscribe = cache.subscribe(observe)
        finish_order.seed(cache.snapshot())
        sightings.seed(cache.snapshot())

    def add_retention_hook(
        self, hook: RetentionHook, settle: Callable[[Snapshot], object] | None = None
    ) -> None:
        with self._lock:
            self._hooks.append(weak_hook(hook))
            if settle is not None:
                self._settles.append(weak_hook(settle))

    def note_done(self, job_id: str) -> None:
        with self._lock:
            self._done_unseen[job_id] = time.monotonic()

    def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """Fail jobs whose worker died, fail abandoned pending jobs, apply retention."""
        now = now or self._clock()
        snap = self._cache.snapshot()
        died: list[str] = []
        abandoned: list[str] = []
        in_flight = set(self._submissions.ids())
        limits = self.limits
        for job in snap.active().values():  # only unfinished jobs can have died
            if job.id in in_flight and local_pid(job) is not None:
                # Run by this queue's own pool on this host: when its worker dies, its
                # future says so, with the exit code; judging it by its pid here raced
                # that (a loaded machine showed "process ... is gone" instead).
                continue
            # Pending jobs have no heartbeat: judged by their submitter's pid where it
            # runs here, else by how long they have been waiting.
            alive = is_owner_alive(
                job, now=now, heartbeat_timeout=self._timeout_for(job), sightings=self._sightings
            )
            if not alive and self._fail_dead(job, now):
                (died if job.status is BatchStatus.RUNNING else abandoned).append(job.id)
        removed = self.apply_retention(snap, now=now, max_age_hours=limits.retention_hours)
        self._overlay.prune(snap, active=self._submissions.__contains__)
        if died or abandoned:
            logger.warning(
                "statusbridge: %d job(s) whose worker died and %d abandoned pending job(s) "
                "marked FAILED",
                len(died),
                len(abandoned),
            )
        return MaintenanceReport(tuple(died), tuple(abandoned), tuple(removed))

    def apply_retention(
        self, snap: Snapshot, *, now: datetime, max_age_hours: float | None, lag: int = 0
    ) -> list[str]:
        """Remove what retention selects; the count-based pass waits for ``lag`` extra records."""
        max_completed = self.limits.max_completed_jobs
        finished = snap.summary().finished
        if finished <= max_completed + lag and max_age_hours is None:
            return []
        with self._lock:
            settles = [ref() for ref in self._settles]
            hooks = [ref() for ref in self._hooks]
        for settle in settles:  # first: what must outlive the records is saved
            if settle is not None:
                settle(snap)
        protected: set[str] = set()
        for hook in hooks:
            if hook is not None:
                protected.update(hook(snap))
        if not _unprotected_finished(snap, protected):
            # Every finished job is held (its batch still runs, or a hook keeps it): the
            # walk below would pass them all, once per finished job of a big batch.
            return []
        # The oldest few beyond the limit, from the finish order (O(1) amortised per
        # finished job); with an age limit, one cheap pass over the finished jobs.
        doomed = self._finish_order.select(
            snap,
            RetentionPolicy(max_completed, max_age_hours),
            now=now,
            protected=lambda job: (
                job.batch_id is not None
                and (job.batch_id in protected or not snap.summary(job.batch_id).is_done)
            ),
        )
        if not doomed:
            return []
        # Noted first: a reader may see a record gone before the call returns.
        self._overlay.note_removed(job.id for job in doomed)
        # The cache's file signatures spare the store reading each record back.
        removed = self._store.delete_if_unchanged(doomed, versions=self._cache.versions_of(doomed))
        self._overlay.forget_removed(removed, active=self._submissions.__contains__)
        return removed

    def _timeout_for(self, job: BatchJob) -> float:
        """How long an unfinished job's owner may stay silent: the heartbeat timeout while
        it runs, the pending timeout while it waits."""
        if job.status is BatchStatus.RUNNING:
            return self.limits.heartbeat_timeout
        return self.limits.pending_timeout

    def _fail_dead(self, seen: BatchJob, now: datetime) -> bool:
        limits = self.limits

        def change(current: BatchJob | None) -> dict[str, Any] | None:
            # Judge again under the lock, on the record as it is now.
            if current is None or current.status is not seen.status:
                return None
            if current.owner != seen.owner or is_owner_alive(
                current,
                now=now,
                heartbeat_timeout=self._timeout_for(seen),
                sightings=self._sightings,
            ):
                return None
            if current.status is BatchStatus.RUNNING:
                why = f"worker died: process {current.owner} is gone"
                if local_pid(current) is None:
                    why = (
                        f"worker died: no heartbeat from {current.owner} "
                        f"for over {limits.heartbeat_timeout:g}s"
                    )
            else:
                why = (
                    f"abandoned: the queue that accepted it ({current.owner}) is gone; "
                    "it never started"
                )
            return {"status": BatchStatus.FAILED, "error_message": why}

        return self._store.modify(seen.id, change) is not None

    def after_jobs_done(self) -> bool:
        """Count-based retention right after jobs finish (age-based runs in ``maintain``).

        Returns True while some job done here is not yet finished in the cache:
        the supervisor then runs this again shortly, so the last jobs of a burst
        are trimmed too without waiting for the next maintenance pass.
        """
        snap = self._cache.snapshot()
        busy = bool(self._submissions.subs)
        # While jobs still run, old records go in groups; once idle, down to the limit.
        lag = retention_lag(self.limits.max_completed_jobs) if busy else 0
        self.apply_retention(snap, now=self._clock(), max_age_hours=None, lag=lag)
        now = time.monotonic()
        with self._lock:
            for job_id, since in list(self._done_unseen.items()):
                job = snap.get(job_id)
                if (job is not None and job.is_finished) or now - since > UNSEEN_PATIENCE:
                    del self._done_unseen[job_id]
            return bool(self._done_unseen)


def _unprotected_finished(snap: Snapshot, protected: set[str]) -> int:
    """Finished jobs retention may remove: those of no batch, or of a batch that is done
    and not kept by a hook. From the per-batch counts, O(batches)."""
    count = snap.summary().finished
    for batch_id in snap.batch_ids():
        summary = snap.summary(batch_id)
        if batch_id in protected or not summary.is_done:
            count -= summary.finished
    return count
