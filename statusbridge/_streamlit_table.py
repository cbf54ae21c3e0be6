"""The job table of a big batch: one page of rows, running and failed jobs first.

Drawn whole, a 10,000-job batch cost the server its styling and Arrow encoding, and the
browser the transfer, on every redraw (and a redraw came every second while jobs ran).
The rows a person looks for are the few that run or failed; the rest are browsed by page.
Adapter-private: ``statusbridge.streamlit.job_table`` is the public way in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from statusbridge.record import BatchJob, BatchStatus

__all__ = [
    "PAGE_SIZE",
    "Page",
    "attention_first",
    "clock_wanted",
    "page_of",
    "page_picker",
    "selection_key",
    "want_clock",
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


# Whether what the current run drew moves with the clock (elapsed, ETA of a running job):
# the live fragment running it then redraws once a second. Per script thread.
_clock = threading.local()


def want_clock(wanted: bool = True) -> None:
    """Note that this run drew values that change with time alone (or reset, with False)."""
    _clock.wanted = wanted


def clock_wanted() -> bool:
    """Whether this run drew values that change with time alone."""
    return bool(getattr(_clock, "wanted", False))
