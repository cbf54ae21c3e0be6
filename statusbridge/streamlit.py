"""Streamlit adapter: one cache and manager per server process, live views that never touch disk.

The only module that imports streamlit. Drop the helpers into your own app::

    import streamlit as st
    from statusbridge import streamlit as sbst

    manager = sbst.get_manager("batches", "batch_status")

    @st.fragment(run_every=0.5)          # reruns read the in-memory snapshot only
    def live() -> None:
        for summary in manager.list_batches()[:1]:
            sbst.batch_summary(summary)
            sbst.job_table(manager.get_batch_jobs(summary.id))

    live()

Workers never call ``st.*``: they write records, the cache reads them, and the
fragment renders the snapshot on the script thread. All text from status
files is shown through Streamlit's escaping widgets (no ``unsafe_allow_html``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from statusbridge.cache import BatchSummary, CacheHealth, StatusCache
from statusbridge.jobs import BatchManager
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import absolute_location

__all__ = [
    "batch_summary",
    "cancel_buttons",
    "finished_over_time",
    "get_cache",
    "get_manager",
    "health_panel",
    "job_table",
]

# Plain symbols that common text fonts have (emoji fonts are often missing on servers).
_STATE_ICONS = {
    BatchStatus.PENDING: "…",
    BatchStatus.RUNNING: "▶",
    BatchStatus.COMPLETED: "✓",
    BatchStatus.FAILED: "✗",
    BatchStatus.CANCELLED: "■",
}


@st.cache_resource(show_spinner=False)
def _cache_for(folder: str) -> StatusCache:
    return StatusCache(folder)


def get_cache(status_dir: str | Path = "batch_status") -> StatusCache:
    """The server-wide ``StatusCache`` of ``status_dir``: all sessions share one observer."""
    return _cache_for(absolute_location(status_dir))


@st.cache_resource(show_spinner=False)
def _manager_for(
    batch_dir: str, status_dir: str, max_concurrent: int, executor: str
) -> BatchManager:
    return BatchManager(
        batch_dir,
        max_concurrent,
        status_dir,
        executor=executor,  # type: ignore[arg-type]
        cache=_cache_for(status_dir),
    )


def get_manager(
    batch_dir: str | Path = "batches",
    status_dir: str | Path = "batch_status",
    *,
    max_concurrent: int = 2,
    executor: Literal["thread", "process"] = "thread",
) -> BatchManager:
    """The server-wide ``BatchManager`` for these folders (shares the folder's cache)."""
    return _manager_for(
        absolute_location(batch_dir),
        absolute_location(status_dir),
        max_concurrent,
        executor,
    )


def batch_summary(summary: BatchSummary) -> None:
    """Overall progress bar and a count per status."""
    label = summary.name or summary.id or "All jobs"
    st.progress(summary.progress, text=f"{label}: {summary.state}, {summary.progress:.0%}")
    columns = st.columns(len(BatchStatus))
    for column, status in zip(columns, BatchStatus, strict=True):
        column.metric(f"{_STATE_ICONS[status]} {status.value}", summary.counts[status])


def _duration(job: BatchJob, now: datetime) -> float | None:
    if job.started_at is None:
        return None
    end = job.completed_at or now
    return round(max(0.0, (end - job.started_at).total_seconds()), 1)


def job_rows(jobs: Iterable[BatchJob], now: datetime | None = None) -> list[dict[str, Any]]:
    """The rows ``job_table`` shows (plain values, easy to test and to reuse)."""
    now = now or datetime.now(UTC)
    return [
        {
            "job": job.id,
            "state": f"{_STATE_ICONS[job.status]} {job.status.value}",
            "progress": job.progress if job.progress is not None else 0.0,
            "message": job.error_message or job.message,
            "seconds": _duration(job, now),
        }
        for job in jobs
    ]


def job_table(jobs: Iterable[BatchJob], *, key: str | None = None) -> None:
    """A table of jobs with per-job progress, state, message and duration (text escaped)."""
    rows = job_rows(jobs)
    if not rows:
        st.caption("No jobs yet.")
        return
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",  # use_container_width is deprecated (removed after 2025-12-31)
        key=key,
        column_config={
            "progress": st.column_config.ProgressColumn(
                "progress", min_value=0.0, max_value=1.0, format="percent"
            ),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        },
    )


def cancel_buttons(manager: BatchManager, jobs: Sequence[BatchJob], *, key: str = "cancel") -> int:
    """A cancel button per unfinished job; returns how many were cancelled on this run."""
    cancelled = 0
    for job in jobs:
        if job.is_finished:
            continue
        if st.button(f"Cancel {job.id}", key=f"{key}-{job.id}"):
            cancelled += int(manager.queue.cancel(job.id))
    return cancelled


def health_panel(health: CacheHealth) -> None:
    """Backend, events applied, rescans and invalid files of the cache."""
    cols = st.columns(4)
    cols[0].metric("backend", health.backend)
    cols[1].metric("events", health.events)
    cols[2].metric("rescans", health.rescans)
    cols[3].metric("snapshot version", health.version)
    if health.invalid_files:
        st.warning(f"{len(health.invalid_files)} file(s) skipped")
        st.dataframe(
            [{"file": name, "reason": reason} for name, reason in health.invalid_files.items()],
            hide_index=True,
        )
    if health.last_error:
        st.error(health.last_error)


def finished_over_time(
    jobs: Iterable[BatchJob], *, bucket_seconds: int = 5
) -> dict[str, list[Any]]:
    """Jobs finished per time bucket, cumulative, for ``st.line_chart`` (x: time, y: count)."""
    times = sorted(j.completed_at for j in jobs if j.is_finished and j.completed_at)
    if not times:
        return {"time": [], "finished": []}
    buckets: dict[datetime, int] = {}
    for t in times:
        stamp = datetime.fromtimestamp(t.timestamp() // bucket_seconds * bucket_seconds, UTC)
        buckets[stamp] = buckets.get(stamp, 0) + 1
    total = 0
    xs, ys = [], []
    for stamp in sorted(buckets):
        total += buckets[stamp]
        xs.append(stamp)
        ys.append(total)
    return {"time": xs, "finished": ys}
