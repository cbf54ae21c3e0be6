"""A batch's params must fit the records its jobs will write: checked before anything is written.

Found only at ``start_batch``, one oversized job would fail half-way: the jobs
before it already run, the batch counts as started and cannot be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from statusbridge.jobs._liveness import this_process
from statusbridge.record import BatchJob, BatchStatus, encode_job

__all__ = ["check_records_fit"]


def _running_record_size(job_id: str, params: Any, batch_id: str, now: datetime) -> int:
    """The size of the job's record while it runs, before it has a result."""
    probe = BatchJob(
        id=job_id,
        status=BatchStatus.RUNNING,
        params=params,
        batch_id=batch_id,
        progress=0.0,
        created_at=now,
        started_at=now,
        updated_at=now,
        heartbeat_at=now,
        seq=1,
        **this_process().fields(),  # type: ignore[arg-type]
    )
    return len(encode_job(probe))


def check_records_fit(
    job_ids: Sequence[str],
    params: Sequence[Any],
    *,
    batch_id: str,
    definition_bytes: int,
    max_bytes: int,
    now: datetime,
) -> None:
    """Raise ``ValueError`` naming the first job whose params a record could not hold.

    ``definition_bytes``, the size of the batch's definition, holds every job's
    params encoded as a record encodes them: when an empty record plus all of
    it fits, every job does, and no job needs encoding (the usual case).
    """
    if not job_ids:
        return
    if _running_record_size(job_ids[0], None, batch_id, now) + definition_bytes <= max_bytes:
        return
    for index, (job_id, job_params) in enumerate(zip(job_ids, params, strict=True)):
        size = _running_record_size(job_id, job_params, batch_id, now)
        if size > max_bytes:
            raise ValueError(
                f"jobs[{index}]: its params make a record of {size} bytes; a job's record "
                f"holds at most {max_bytes} bytes (the status store's max_bytes)"
            )
