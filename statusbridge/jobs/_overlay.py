"""Read-your-writes: the records a queue wrote (or holds) that its cache may not show yet.

A queue's own writes reach its cache through the watcher, a moment later; until
then ``get_job_status`` and ``wait`` answer from here, so a caller never sees a
job it just submitted as unknown, nor a job that ended as still running. An
entry goes once the cache has caught up with it (same run, same or newer
``seq``). Owns its lock; relies on the store only to read a job's final record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.record import BatchJob
from statusbridge.store import StatusStore
from statusbridge.store._store import merged

__all__ = ["REMEMBER_REMOVED", "Overlay", "QueueView", "caught_up"]

logger = logging.getLogger(__name__)

# How many ids of records removed by retention a queue remembers, so that
# ``wait()`` on a job that finished and was removed is not "unknown".
REMEMBER_REMOVED = 10_000


def caught_up(cached: BatchJob | None, local: BatchJob) -> bool:
    """Whether the cache's record is (at least) this run's record written here."""
    return cached is not None and cached.created_at == local.created_at and cached.seq >= local.seq


def _never(job_id: str) -> bool:
    return False


@dataclass(frozen=True)
class QueueView:
    """What a queue shows: the cache's snapshot, and its own records the snapshot lacks."""

    snapshot: Snapshot
    newer: tuple[BatchJob, ...]

    def newer_of(self, batch_id: str) -> list[BatchJob]:
        return [job for job in self.newer if job.batch_id == batch_id]

    def has_records(self, batch_id: str) -> bool:
        """Whether any job of the batch has a record (O(1) from the snapshot's counts)."""
        return bool(self.snapshot.summary(batch_id).total) or bool(self.newer_of(batch_id))


class Overlay:
    """Records written or held here, by job id, until the cache shows them.

    While a write of a job is still to come (``held``: its record is held in
    memory; ``retrying``: a failed write waits for a retry), its entry stays.
    """

    def __init__(self, store: StatusStore, cache: StatusCache) -> None:
        self._store = store
        self._cache = cache
        self._lock = threading.Lock()
        self._jobs: dict[str, BatchJob] = {}
        self._absent_once: set[str] = set()
        self._removed: dict[str, None] = {}  # recently removed by retention, oldest first
        self.held: Callable[[str], bool] = _never  # its record is held in memory
        self.retrying: Callable[[str], bool] = _never  # a failed write of it waits

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> BatchJob | None:
        return self._jobs.get(job_id)

    def show(self, jobs: Iterable[BatchJob]) -> None:
        """These records were just written (or are held) here."""
        with self._lock:
            for job in jobs:
                self._jobs[job.id] = job

    def replace(self, job: BatchJob) -> None:
        """A newer record of a job shown here (a job not shown here stays unshown)."""
        with self._lock:
            if job.id in self._jobs:
                self._jobs[job.id] = job

    def change(self, job_id: str, **fields: Any) -> None:
        """Change the fields of a job shown here (one held in memory, say)."""
        with self._lock:
            local = self._jobs.get(job_id)
            if local is not None:
                self._jobs[job_id] = local.replace(**fields)

    def newest(self, job_id: str, cached: BatchJob | None) -> BatchJob | None:
        """Ours, unless the cache has caught up with it."""
        local = self._jobs.get(job_id)
        return cached if local is None or caught_up(cached, local) else local

    def show_change(
        self, job_id: str, base: BatchJob | None, fields: dict[str, Any] | None, now: datetime
    ) -> None:
        """Show ``fields`` applied to ``base`` (a change whose write waits for a retry)."""
        with self._lock:
            if fields is not None:
                self._jobs[job_id] = merged(job_id, base, fields, now)
            elif base is not None:
                self._jobs[job_id] = base  # shown until the retry (get_job_status)

    def view(self, job_id: str, cached: BatchJob | None, *, retrying: bool) -> BatchJob | None:
        """What ``get_job_status`` answers: ours or the cache's, whichever is newer."""
        local = self._jobs.get(job_id)
        if local is None:
            return cached
        if retrying:
            # Ours is newer than any record on disk until the retry writes it: the
            # disk's seq may equal ours (ours was built on a record the cache had
            # not caught up with), so seq alone cannot tell.
            return local
        # No pop here when the cache has caught up: without the lock it could drop a
        # newer record the supervisor stored meanwhile, and the UI path takes no lock.
        # The supervisor prunes caught-up entries (``prune``).
        return cached if caught_up(cached, local) else local

    def unseen(self, snapshot: Snapshot, retrying: set[str]) -> list[BatchJob]:
        """Records shown here that ``snapshot`` does not show yet."""
        with self._lock:
            local = list(self._jobs.items())
        return [
            job
            for job_id, job in local
            if job_id in retrying or not caught_up(snapshot.get(job_id), job)
        ]

    def prune(
        self,
        snapshot: Snapshot,
        job_ids: Iterable[str] | None = None,
        *,
        active: Callable[[str], bool] = _never,
    ) -> None:
        """Drop entries the cache has caught up with.

        An entry of a job that is done here (not ``active``) but absent from the
        cache (removed, or replaced by a newer run) goes at the second full pass
        that finds it so: one pass alone may just be ahead of a slow (polling) cache.
        """
        full_pass = job_ids is None
        with self._lock:
            absent_before, absent_now = self._absent_once, set()
            for job_id in list(self._jobs) if job_ids is None else job_ids:
                local = self._jobs.get(job_id)
                if local is None or self.retrying(job_id):
                    continue  # a retry's record stays until written (see ``view``)
                if caught_up(snapshot.get(job_id), local):
                    del self._jobs[job_id]
                elif full_pass and not active(job_id) and not self.held(job_id):
                    if job_id in absent_before:
                        del self._jobs[job_id]
                    else:
                        absent_now.add(job_id)
            if full_pass:
                self._absent_once = absent_now

    def settle(self, job_id: str, final: BatchJob | None = None) -> None:
        """A job is done here: its entry becomes its final record.

        Until the cache catches up, ``get_job_status`` must not keep answering
        with the PENDING record written at submit (a job whose record retention
        already removed would look pending forever). ``final``: the record its
        worker wrote last, else it is read.
        """
        if self.held(job_id) or self.retrying(job_id):
            return  # its record is still to be written (a write failed): ours stays
        local = self._jobs.get(job_id)
        if local is None:
            return
        if final is None:
            try:
                final = self._store.read(job_id)
            except Exception:  # an invalid file: the cache reports it; forget ours
                logger.exception("job %s: cannot read its final record", job_id)
                final = None
        # Retention may have removed the record already (it can judge a job by the cache,
        # which has its end at once, before the supervisor is done with it): keep nothing.
        removed = job_id in self._removed and self._cache.get(job_id) is None
        with self._lock:
            if self._jobs.get(job_id) is not local:
                return
            if final is None or final.created_at != local.created_at or removed:
                del self._jobs[job_id]  # removed (or replaced by a new run) already
            else:
                self._jobs[job_id] = final
        self.prune(self._cache.snapshot(), [job_id])

    def forget_removed(self, job_ids: Iterable[str], *, active: Callable[[str], bool]) -> None:
        """Retention removed these records: drop ours too, unless the job runs here."""
        with self._lock:
            for job_id in job_ids:
                if not active(job_id):
                    self._jobs.pop(job_id, None)

    def note_removed(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._removed[job_id] = None
            while len(self._removed) > REMEMBER_REMOVED:
                del self._removed[next(iter(self._removed))]

    def was_removed(self, job_id: str) -> bool:
        return job_id in self._removed
