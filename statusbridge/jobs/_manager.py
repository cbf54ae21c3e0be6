"""BatchManager: named batches of jobs, with the seed application's API.

A facade: the definition format is ``_definition``, the definitions' shelf
``_definitions``, the work ``_batch_engine``, and the engines shared by the
managers of one process ``_engines``. A batch definition is saved atomically
as ``<batch_dir>/<batch_id>.json`` (or, when the status location is a URL and
no ``batch_dir`` is given, on the same server); the jobs' status lives with
any other job's.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from statusbridge.cache import BatchSummary, StatusCache
from statusbridge.jobs._closing import ShutsDown
from statusbridge.jobs._definition import BatchDefinition, FinalCounts
from statusbridge.jobs._engines import EngineOptions, attach, detach, release_if_unused
from statusbridge.jobs._options import check_queue_options
from statusbridge.jobs._queue import BatchQueue
from statusbridge.record import BatchJob
from statusbridge.record._model import utc_now
from statusbridge.store._location import is_url

__all__ = ["BatchDefinition", "BatchManager", "FinalCounts"]


class BatchManager(ShutsDown):
    """Create, start, follow and cancel named batches of jobs.

    Keeps the seed application's names: switching is a one-line import change::

        manager = BatchManager()
        batch_id = manager.create_custom_batch(jobs, "Test")
        manager.start_batch(batch_id, generator)
        status = manager.get_batch_status(batch_id)

    Building a manager again for the same folders and options in one process
    (as a Streamlit script does on every rerun) reuses the running engine.
    """

    def __init__(
        self,
        batch_dir: str | os.PathLike[str] | None = None,
        max_concurrent: int = 2,
        status_dir: str | os.PathLike[str] = "batch_status",
        *,
        executor: Literal["thread", "process"] | Executor = "thread",
        max_completed_jobs: int = 1000,
        retention_hours: float | None = 24.0,
        clock: Callable[[], datetime] = utc_now,
        cache: StatusCache | None = None,
        **queue_options: Any,
    ) -> None:
        check_queue_options(
            {
                "max_concurrent": max_concurrent,
                "max_completed_jobs": max_completed_jobs,
                "retention_hours": retention_hours,
                **queue_options,
            }
        )
        if batch_dir is None:
            # With a URL status location the definitions live on the same server.
            batch_dir = status_dir if is_url(status_dir) else "batches"
        options = EngineOptions(
            batch_dir,
            status_dir,
            max_concurrent,
            executor,
            max_completed_jobs,
            retention_hours,
            clock,
            cache,
            queue_options,
        )
        self._engine = engine = attach(options)
        self._detach = weakref.finalize(self, detach, engine, False)

    @property
    def queue(self) -> BatchQueue:
        return self._engine.queue

    @property
    def batch_location(self) -> str:
        """Where the batch definitions live: a folder, or a URL (password hidden)."""
        return self._engine.shelf.label

    @property
    def batch_dir(self) -> Path:
        """Deprecated: use ``batch_location``. The definitions' folder (ValueError for a URL)."""
        warnings.warn(
            "BatchManager.batch_dir is deprecated; use batch_location",
            DeprecationWarning,
            stacklevel=2,
        )
        if is_url(self.batch_location):
            raise ValueError(f"batch definitions live at {self.batch_location}, not in a folder")
        return Path(self.batch_location)

    @property
    def retention_hours(self) -> float | None:
        return self._engine.retention_hours

    # -- the seed API ----------------------------------------------------------
    def create_custom_batch(self, jobs: list[dict[str, Any]], name: str) -> str:
        """Define a batch, one job per params dict; returns its id (run it with ``start_batch``)."""
        return self._engine.create(jobs, name)

    def start_batch(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        """Submit every job of the batch: ``generator_func(params)`` runs once per job.

        All or nothing: if the function cannot be sent to the workers (a lambda
        with ``executor="process"``), it raises and the batch stays unstarted.
        """
        self._engine.start(batch_id, generator_func)

    def get_batch_status(self, batch_id: str) -> BatchSummary | None:
        """Counts per status, overall progress and state; None for an unknown batch."""
        return self._engine.status(batch_id)

    def get_job_status(self, job_id: str) -> BatchJob | None:
        return self._engine.queue.get_job_status(job_id)

    def get_batch_jobs(self, batch_id: str) -> tuple[BatchJob, ...]:
        """Every job of the batch, in definition order (unstarted ones as PENDING).

        Once the batch has finished, retention may remove its records (its summary
        keeps the final counts): those jobs are left out, never shown unfinished.
        """
        return self._engine.jobs(batch_id)

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every unfinished job of the batch; returns how many were cancelled."""
        return self._engine.cancel(batch_id)

    def list_batches(self) -> list[BatchSummary]:
        """Every known batch (also those other processes created), newest first."""
        return self._engine.summaries()

    @property
    def batches(self) -> Mapping[str, BatchDefinition]:
        return self._engine.definitions()

    def remove_old_batches(self, now: datetime | None = None) -> list[str]:
        """Remove batch files older than ``retention_hours`` whose jobs are all finished."""
        return self._engine.remove_old_batches(now)

    # -- life cycle ---------------------------------------------------------
    def shutdown(self, wait: bool = True) -> None:
        """Let go of the engine; the last manager using it shuts it down.

        With ``wait`` (and no other manager on it), waits for the jobs first.
        May be called twice.
        """
        if self._detach.detach() is not None:
            detach(self._engine, wait)
        elif wait:
            release_if_unused(self._engine, wait=True)

    def __repr__(self) -> str:
        return f"<BatchManager {self.batch_location!r} queue={self.queue!r}>"
