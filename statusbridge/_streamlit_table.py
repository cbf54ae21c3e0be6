"""The job table (``statusbridge.streamlit.job_table``), and how it pages a big batch: one
page of rows, running and failed jobs first.

Drawn whole, a 10,000-job batch cost the server its styling and Arrow encoding, and the
browser the transfer, on every redraw (and a redraw came every second while jobs ran).
The rows a person looks for are the few that run or failed; the rest are browsed by page.
Adapter-private: ``statusbridge.streamlit.job_table`` is the public way in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from statusbridge.display import (
    STATUS_COLOURS,
    elapsed_seconds,
    eta_seconds,
    floor_share,
    format_duration,
    job_share,
    short_id,
    state_label,
)
from statusbridge.record import BatchJob, BatchStatus

__all__ = [
    "PAGE_SIZE",
    "STATE_ICONS",
    "Page",
    "attention_first",
    "browser_zone",
    "job_rows",
    "job_table",
    "page_of",
    "page_picker",
    "selection_key",
]

PAGE_SIZE = 50  # rows sent per page: about two screens, a few kB

_FIRST = (BatchStatus.RUNNING, BatchStatus.FAILED)

# attention_first's results by the identity of the tuple they were made from (kept alive
# with it, so the id cannot be reused while listed). A snapshot hands out the same tuple
# for a batch until that batch changes: redraws of an unchanged batch skip the walk.
_orders: dict[int, tuple[Sequence[BatchJob], tuple[BatchJob, ...]]] = {}
_orders_lock = threading.Lock()
_ORDERS_KEPT = 8


def attention_first(jobs: Sequence[BatchJob]) -> tuple[BatchJob, ...]:
    """``jobs`` with the running ones first, then the failed ones, then the rest, each in
    the order given. Remembered per tuple: pass a snapshot's ``batch(...)`` as it is."""
    key = id(jobs)
    with _orders_lock:
        known = _orders.get(key)
    if known is not None and known[0] is jobs:
        return known[1]
    groups: dict[BatchStatus, list[BatchJob]] = {status: [] for status in _FIRST}
    rest: list[BatchJob] = []
    for job in jobs:
        group = groups.get(job.status)
        (rest if group is None else group).append(job)
    ordered = tuple(job for status in _FIRST for job in groups[status]) + tuple(rest)
    if isinstance(jobs, tuple):
        with _orders_lock:
            _orders[key] = (jobs, ordered)
            while len(_orders) > _ORDERS_KEPT:
                del _orders[next(iter(_orders))]
    return ordered


@dataclass(frozen=True)
class Page:
    """One page of a job list: its jobs, its 1-based number, and where it lies in the list."""

    jobs: tuple[BatchJob, ...]
    number: int
    pages: int
    start: int
    total: int


def page_of(jobs: Sequence[BatchJob], number: int, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` (1-based, clamped to the pages there are) of ``jobs``, ``size`` rows each."""
    pages = max(1, math.ceil(len(jobs) / size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return Page(tuple(jobs[start : start + size]), number, pages, start, len(jobs))


def page_picker(total: int, size: int, key: str) -> int:
    """The page number input above a paged table (the page asked for, 1-based)."""
    pages = max(1, math.ceil(total / size))
    state_key = f"{key}-page"
    if int(st.session_state.get(state_key, 1)) > pages:  # the list got shorter
        st.session_state[state_key] = pages
    with st.container(horizontal=True, vertical_alignment="center"):
        number = st.number_input(
            f"Page (of {pages:,})",
            min_value=1,
            max_value=pages,
            step=1,
            key=state_key,
            width=170,
            help="Running and failed jobs come first, then the others in the order they were made.",
        )
        first = (int(number or 1) - 1) * size
        shown = f"jobs {first + 1:,} to {min(first + size, total):,} of {total:,}"
        st.caption(f"{shown}, running and failed first")
    return int(number or 1)


def selection_key(key: str, shown: Sequence[str]) -> str:
    """The table's widget key: a new one (selection cleared) when the selected rows now
    hold other jobs.

    Streamlit keeps a table's selection as row positions. Rows move on a live, paged table
    (a job starts: it moves to the top), and the highlighted row would then be another job,
    which "Cancel selected" would cancel.
    """
    generation = int(st.session_state.get(f"{key}-generation", 0))
    widget_key = f"{key}-{generation}"
    before: Sequence[str] = st.session_state.get(f"{key}-shown", ())
    state: Any = st.session_state.get(widget_key)
    rows = list(state["selection"]["rows"]) if state else []
    moved = any(i >= len(before) or i >= len(shown) or before[i] != shown[i] for i in rows)
    if moved:
        generation += 1
        st.session_state[f"{key}-generation"] = generation
        widget_key = f"{key}-{generation}"
    st.session_state[f"{key}-shown"] = tuple(shown)
    return widget_key


# Plain symbols that common text fonts have (emoji fonts are often missing on servers).
STATE_ICONS = {
    BatchStatus.PENDING: "…",
    BatchStatus.RUNNING: "▶",
    BatchStatus.COMPLETED: "✓",
    BatchStatus.FAILED: "✗",
    BatchStatus.CANCELLED: "■",
}


def _shown_progress(job: BatchJob) -> float | None:
    """A job's bar: blank until it reports, full only when completed, rounded down."""
    share = job_share(job)
    return None if share is None else floor_share(share, 100) / 100


_CLOCK_PX = 72  # "11:41:10"
_ID_CHARS = 16  # the job column's width, in characters: ids keep their distinguishing tail


def job_rows(
    jobs: Iterable[BatchJob],
    now: datetime | None = None,
    *,
    batch_id: str | None = None,
    zone: tzinfo | None = None,
) -> list[dict[str, Any]]:
    """The rows ``job_table`` shows (plain values, easy to test and to reuse).

    Blank (``None`` or ``""``), never "None", where a value does not exist yet. Job
    ids are shortened by ``display.short_id``: without the prefix of ``batch_id``
    (default: the batch of every row, when they all have the same), then to their
    last ``_ID_CHARS`` characters. The full id is in ``job_details``.

    Elapsed and ETA are durations at ``now``; with a ``zone``, those of a running job
    are clock times in that zone instead, which stay right while nothing is written:
    when it started (``11:41:10``) and when it should end (its ETA at its last write,
    ``11:43:16``).
    """
    now = now or datetime.now(UTC)
    jobs = list(jobs)
    if batch_id is None:
        batches = {job.batch_id for job in jobs}
        batch_id = next(iter(batches)) if len(batches) == 1 else None
    return [
        {
            "job": short_id(job.id, _ID_CHARS, batch_id=batch_id),
            "state": f"{STATE_ICONS[job.status]} {state_label(job)}",
            "progress": _shown_progress(job),
            **(
                _clock_times(job, now, zone)
                if zone is not None and job.status is BatchStatus.RUNNING
                else {
                    "elapsed": format_duration(elapsed_seconds(job, now)),
                    "eta": format_duration(eta_seconds(job, now)),
                }
            ),
            "message": job.error_message or job.message,
        }
        for job in jobs
    ]


def _clock_times(job: BatchJob, now: datetime, zone: tzinfo) -> dict[str, str]:
    """A running job's elapsed and ETA as clock times in ``zone`` (see ``job_rows``)."""
    started = job.started_at
    reported = job.updated_at or now
    left = eta_seconds(job, reported)
    return {
        "elapsed": "" if started is None else _clock(started, now, zone),
        "eta": "" if left is None else _clock(reported + timedelta(seconds=left), now, zone),
    }


def _clock(when: datetime, now: datetime, zone: tzinfo) -> str:
    """``11:41:10``, or ``Dec 06 11:41`` for a time that is not within hours of ``now``."""
    shown = when.astimezone(zone)
    return shown.strftime("%H:%M:%S" if abs(when - now) < timedelta(hours=12) else "%b %d %H:%M")


def browser_zone() -> tzinfo:
    """The time zone of the browser showing the page (UTC where it is not known)."""
    name = getattr(st.context, "timezone", None)
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


# Every text of the state column, with its colour.
_STATE_CHIPS = {
    **{f"{STATE_ICONS[status]} {status.value}": rgb for status, rgb in STATUS_COLOURS.items()},
    f"{STATE_ICONS[BatchStatus.RUNNING]} cancelling": STATUS_COLOURS[BatchStatus.RUNNING],
}


def job_table(
    jobs: Iterable[BatchJob],
    *,
    key: str | None = None,
    selectable: bool = False,
    page_size: int = PAGE_SIZE,
) -> list[str]:
    """A table of jobs: coloured state, progress, elapsed, ETA, message (text escaped).

    More jobs than ``page_size`` are paged: running and failed jobs first, then the
    rest in the order given, and only the page shown is sent to the browser, under a
    page number input (give each paged table its own ``key``). Pass a snapshot's
    ``batch(...)`` tuple as it is: its order is then worked out once per change of the
    batch, not on every redraw.

    A running job's elapsed and ETA are clock times in the browser's time zone (when it
    started, when it should end: ``job_rows`` with a ``zone``), so nothing on the table
    moves with the clock alone, and a live fragment redraws it only on a write.

    With ``selectable``, rows can be selected (the fragment reruns on a change) and
    the ids of the selected jobs are returned; a selection is cleared when its rows
    come to hold other jobs (a paged table moves jobs that start or end).
    """
    listed = jobs if isinstance(jobs, Sequence) else tuple(jobs)
    base_key = key or "statusbridge-jobs"
    if len(listed) > page_size:
        number = page_picker(len(listed), page_size, base_key)
        shown = page_of(attention_first(listed), number, page_size).jobs
    else:
        shown = tuple(listed)
    rows = job_rows(shown, zone=browser_zone())
    if not rows:
        st.caption("No jobs yet.")
        return []
    import pandas as pd  # type: ignore[import-untyped]  # Streamlit needs it; for the colours

    # The state as a coloured label (a one-option list column): colouring cells through a
    # pandas Styler cost most of a redraw.
    frame = pd.DataFrame([{**row, "state": [row["state"]]} for row in rows])
    # Widths in pixels, as narrow as their values allow: the message gets the rest (at
    # 900 px with the sidebar open it was off screen). About 8 px per character.
    id_px = 20 + 8 * max(len(str(row["job"])) for row in rows)
    config = {
        "job": st.column_config.TextColumn("job", width=id_px),
        "state": st.column_config.MultiselectColumn(
            "state", width=116, options=list(_STATE_CHIPS), color=list(_STATE_CHIPS.values())
        ),
        "progress": st.column_config.ProgressColumn(
            "progress", min_value=0.0, max_value=1.0, format="percent", width=96
        ),
        "elapsed": st.column_config.TextColumn(
            "elapsed", width=_CLOCK_PX, help="How long it took; a running job: when it started."
        ),
        "eta": st.column_config.TextColumn(
            "ETA", width=_CLOCK_PX, help="When a running job should end, at its pace so far."
        ),
        "message": st.column_config.TextColumn(
            "message", width="large", help="Select a row to read the whole message below."
        ),
    }
    if not selectable:
        st.dataframe(frame, hide_index=True, width="stretch", key=key, column_config=config)
        return []
    ids = [job.id for job in shown]
    state = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key=selection_key(base_key, ids),
        column_config=config,
        on_select="rerun",
        selection_mode="multi-row",
    )
    picked = state.selection.rows if state is not None else []
    return [ids[i] for i in picked if 0 <= i < len(ids)]
