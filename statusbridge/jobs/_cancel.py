"""Cancellation as a record change, so any process (a queue, the CLI, another app) can ask."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.store import StatusStore

__all__ = ["request_cancel", "request_cancels"]


def request_cancel(store: StatusStore, job_id: str) -> bool:
    """Cancel ``job_id`` in ``store``'s folder; False if it is unknown or already finished.

    A PENDING job becomes CANCELLED at once (its worker will not start it); a
    RUNNING one gets ``cancel_requested``, which its worker notices at its next
    progress write or ``is_cancelled()`` check, in whatever process it runs.
    """

    def change(current: BatchJob | None) -> dict[str, Any] | None:
        if current is None or current.is_finished:
            return None
        if current.status is BatchStatus.PENDING:
            return {
                "status": BatchStatus.CANCELLED,
                "cancel_requested": True,
                "message": "cancelled before it started",
            }
        if current.cancel_requested:
            return None  # asked already: no new write
        return {"cancel_requested": True}

    job_id = validate_job_id(job_id)
    if store.modify(job_id, change) is not None:
        return True
    current = store.read(job_id)
    return current is not None and not current.is_finished


def request_cancels(store: StatusStore, job_ids: Iterable[str]) -> list[str]:
    """``request_cancel`` for each of ``job_ids``; the ones that were asked to stop, in order."""
    return [job_id for job_id in job_ids if request_cancel(store, job_id)]
