"""statusbridge demo: submit simulated batches, watch them live, cancel them.

Run: ``streamlit run demo_app.py``. Folders: ``batch_status/`` and ``batches/``
under the working directory, or ``$STATUSBRIDGE_DIR`` / ``$STATUSBRIDGE_BATCH_DIR``
(``STATUSBRIDGE_DIR`` may be a ``redis://`` URL: batches then live there too).
Jobs written by another program show up too: ``statusbridge simulate --jobs 20``.

``streamlit run`` finds ``app = st.App(...)`` below and serves this page with a
server-sent-events route next to it, so the live parts rerun when a status
changes (push) instead of on a timer. Run as the page itself (``__main__``: every
session, and AppTest) it draws the page; imported as a module it only builds the app.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shlex
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import streamlit as st

from statusbridge import BatchManager, BatchSummary
from statusbridge import streamlit as sbst
from statusbridge.demo import STEPS, simulated_job
from statusbridge.display import backend_text, done_text
from statusbridge.store._location import is_url, location_text

STATUS_DIR = os.environ.get("STATUSBRIDGE_DIR", "batch_status")
BATCH_DIR = os.environ.get("STATUSBRIDGE_BATCH_DIR") or (
    STATUS_DIR if is_url(STATUS_DIR) else "batches"
)
EXECUTORS: dict[str, Literal["thread", "process"]] = {"threads": "thread", "processes": "process"}
SHOWN_BATCHES = 8  # listed at the top; older ones in an expander below them


def manager(executor: Literal["thread", "process"] = "thread") -> BatchManager:
    return sbst.get_manager(BATCH_DIR, STATUS_DIR, executor=executor)


def all_batches() -> list[BatchSummary]:
    """Every batch in the folders, newest first: this page's, other programs', seed_app's."""
    snap = sbst.get_cache(STATUS_DIR).snapshot()
    created: dict[str, datetime] = {}
    summaries: dict[str, BatchSummary] = {}
    for owner in (manager(kind) for kind in EXECUTORS.values()):
        for batch_id, definition in owner.batches.items():
            summary = owner.get_batch_status(batch_id)
            if summary is not None and batch_id not in summaries:
                summaries[batch_id] = summary
                created[batch_id] = definition.created_at
    for batch_id in snap.batch_ids():
        if batch_id not in summaries:
            jobs = snap.batch(batch_id)
            summaries[batch_id] = snap.summary(batch_id).with_name(batch_id)
            created[batch_id] = jobs[0].created_at or datetime.min.replace(tzinfo=UTC)
    order = sorted(summaries, key=lambda b: (created[b], b), reverse=True)
    return [summaries[b] for b in order]


def start_batch(jobs: int, duration: float, fail_rate: float, executor_label: str) -> str:
    rng = random.Random()
    params = [
        {
            "duration": duration,
            "fail_at": rng.randint(2, STEPS) if rng.random() < fail_rate else None,
        }
        for _ in range(jobs)
    ]
    chosen = manager(EXECUTORS[executor_label])
    batch_id = chosen.create_custom_batch(params, f"{jobs} jobs on {executor_label}")
    chosen.start_batch(batch_id, simulated_job)  # from an importable module: see the README
    return batch_id


# Narrow screens: Streamlit's "auto" collapses the sidebar up to 768 px wide; from there to
# about 1000 px a narrow sidebar and narrow margins leave the job table its message column.
SIDEBAR_PX = 250
NARROW_MARGINS = (
    "<style>@media (max-width: 1000px) {"
    " [data-testid='stMainBlockContainer'] { padding-left: 1.5rem; padding-right: 1.5rem; } }"
    "</style>"
)


def finished_chart_spec(chart: dict[str, list[Any]]) -> dict[str, Any]:
    """A line chart of ``finished_over_time`` with both scales' domains given.

    Streamlit draws a Vega chart before its data arrives: with domains left to the
    data, each redraw logged 'Infinite extent for field "time"' (and "finished")
    in the browser's console.
    """
    first, last = chart["time"][0], chart["time"][-1]
    start = {"utc": True, **_datetime_parts(first)}
    end = {"utc": True, **_datetime_parts(max(last, first + timedelta(seconds=60)))}
    return {
        "height": 160,
        "mark": {"type": "line", "interpolate": "step-after", "point": True},
        "encoding": {
            "x": {
                "field": "time",
                "type": "temporal",
                "title": "time (UTC)",
                "axis": {"format": "%H:%M:%S", "labelAngle": 0, "labelOverlap": True},
                "scale": {"domain": [start, end]},
            },
            "y": {"field": "finished", "type": "quantitative", "title": "jobs finished",
                  "scale": {"domain": [0, max(1, chart["finished"][-1])]}},
        },
    }  # fmt: skip


def _datetime_parts(when: datetime) -> dict[str, int]:
    """A Vega-Lite DateTime object (numbers for a temporal domain were drawn without labels)."""
    return {"year": when.year, "month": when.month, "date": when.day, "hours": when.hour,
            "minutes": when.minute, "seconds": when.second}  # fmt: skip


def inline_code(text: str) -> str:
    """``text`` as Markdown inline code, shown as typed (backticks in it included).

    Examples:
        >>> inline_code("a `b` c")
        '`` a `b` c ``'
    """
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def sidebar_state() -> Any:
    """``SIDEBAR_PX`` ("auto", that wide) where Streamlit takes a width (1.5x+), else "auto"."""
    try:
        from streamlit.commands.page_config import InitialSideBarState
    except ImportError:
        return "auto"
    return SIDEBAR_PX if int in get_args(InitialSideBarState) else "auto"


def start_from_form() -> None:
    """The form's Start button, a callback: the batch is started and selected before the
    page is drawn (the sidebar, where the form is, is drawn last)."""
    state = st.session_state
    batch_id = start_batch(
        int(state["new-jobs"]),
        float(state["new-duration"]),
        float(state["new-fail-rate"]),
        state["new-executor"] or "",
    )
    state["selected"] = state["started"] = batch_id


def new_batch_form() -> None:
    """The sidebar: a form that starts a simulated batch, and how another program can write."""
    st.header("New batch")
    with st.form("new-batch", enter_to_submit=False):  # its hint overlapped the value
        st.number_input(
            "Number of jobs", min_value=1, max_value=50, value=6, step=1, key="new-jobs"
        )
        st.number_input(
            "Seconds per job",
            min_value=0.2,
            max_value=60.0,
            value=3.0,
            step=0.5,
            key="new-duration",
        )
        st.slider(
            "Failure rate", min_value=0.0, max_value=1.0, value=0.2, step=0.05, key="new-fail-rate"
        )
        st.radio("Executor", list(EXECUTORS), horizontal=True, key="new-executor")
        st.form_submit_button("Start batch", type="primary", on_click=start_from_form)
    if started := st.session_state.pop("started", None):
        st.success(f"Started {started}")
    st.divider()
    st.markdown("**Another program** can write statuses too; run")
    # Plain text, with a URL's password hidden (every viewer of the page sees this).
    shown = location_text(STATUS_DIR) if is_url(STATUS_DIR) else STATUS_DIR
    # Inline code, not st.code: its highlighter is the page's biggest script, and
    # fetching and starting it held up the first drawing of the job table.
    st.markdown(inline_code(f"statusbridge simulate --jobs 20 --dir {shlex.quote(shown)}"))
    st.markdown(
        "and watch them appear." + (" (Put your password in for `***`.)" if "***" in shown else "")
    )


def page() -> None:
    st.set_page_config(
        page_title="statusbridge demo", layout="wide", initial_sidebar_state=sidebar_state()
    )
    # The page's places first, then their contents, the job table's first: the browser
    # fetches the table's grid scripts (the page's biggest) when its element arrives, so
    # it starts on them while the rest of the page (the sidebar last) is still coming.
    head, bars_place, jobs_place = st.container(), st.container(), st.container()
    live = sbst.live_fragment(STATUS_DIR)

    # The bars follow the whole folder; the table below only its batch (follow_batch), so
    # that writes to a big or busy batch elsewhere do not redraw it.
    @live
    def batches() -> None:
        listed = all_batches()
        if not listed:
            st.info("No batches yet: start one from the sidebar.")
            return
        st.subheader(f"Batches ({len(listed)}, newest first)")
        for summary in listed[:SHOWN_BATCHES]:
            sbst.batch_summary(summary, counts=False)
        if len(listed) > SHOWN_BATCHES:
            with st.expander(f"{len(listed) - SHOWN_BATCHES} older batch(es)"):
                for summary in listed[SHOWN_BATCHES:]:
                    sbst.batch_summary(summary, counts=False)

    @live
    def jobs_of_a_batch() -> None:
        listed = all_batches()
        if listed:
            selected_batch(listed)

    def selected_batch(listed: list[BatchSummary]) -> None:
        ids = [b.id or "" for b in listed]
        names = {b.id: b.name if b.name in (b.id, None) else f"{b.name} ({b.id})" for b in listed}
        default = st.session_state.get("selected")
        st.subheader("Jobs")
        chosen = st.selectbox(
            "Batch",
            ids,
            index=ids.index(default) if default in ids else 0,
            format_func=lambda i: names[i] or i,
        )
        st.session_state["selected"] = chosen
        sbst.follow_batch(chosen)  # rerun for this batch's changes (and new batches) only
        summary = next(b for b in listed if b.id == chosen)
        snap = sbst.get_cache(STATUS_DIR).snapshot()
        jobs = snap.batch(chosen or "")  # as it is: the table pages it, and remembers its order
        picked = [
            job
            for job in map(snap.get, sbst.job_table(jobs, key=f"jobs-{chosen}", selectable=True))
            if job is not None
        ]
        unfinished = [j for j in picked if not j.is_finished]
        queue = manager().queue
        with st.container(horizontal=True):  # the table's buttons, right under it
            if st.button(
                f"Cancel selected ({len(unfinished)})",
                disabled=not unfinished,
                key="cancel-selected",
            ):
                st.toast(f"Asked {sum(queue.cancel(j.id) for j in unfinished)} job(s) to stop")
            if st.button("Cancel batch", disabled=summary.is_done, key="cancel-batch"):
                # A manager's batch: its cancel also reaches jobs whose records are not
                # written yet (start_batch writes them in the background).
                owners = (manager(kind) for kind in EXECUTORS.values())
                owner = next((m for m in owners if chosen in m.batches), None)
                if owner is not None and chosen:
                    stopped = owner.cancel_batch(chosen)
                else:
                    stopped = sum(queue.cancel(j.id) for j in jobs if not j.is_finished)
                st.toast(f"Asked {stopped} job(s) to stop")
        # The counts under the table, not above it: drawn first, they stood alone for a
        # moment after Start while the table was still being drawn.
        st.caption(sbst.escape_markdown(f"{summary} · {done_text(summary)}"))  # names: plain
        if picked:
            sbst.job_details(picked)
        else:
            st.caption("Select rows to cancel them or to read their whole message.")

    # A chart of the last minutes needs no more than one redraw a second, and each
    # redraw of it would hold up the tables' next one (one fragment rerun at a time).
    # Drawn only while its expander is open: the chart's scripts, fetched and started
    # on the first load, held up the first drawing of the job table.
    @sbst.live_fragment(STATUS_DIR, gap_ms=1000)
    def chart_and_health() -> None:
        cache = sbst.get_cache(STATUS_DIR)
        box = st.expander("Jobs finished over time, cache health", key="chart", on_change="rerun")
        if not box.open:
            return
        with box:
            chart = sbst.finished_over_time(cache.snapshot().values())
            if chart["time"]:
                st.vega_lite_chart(chart, finished_chart_spec(chart))
            else:
                st.caption("No finished jobs yet.")
            sbst.health_panel(cache.health())

    with jobs_place:
        jobs_of_a_batch()
    with head:
        sbst.hide_running_indicator()
        st.html(NARROW_MARGINS)
        pushed = sbst.push_available(STATUS_DIR)
        st.title("statusbridge demo")
        st.caption(  # each backend says how it works (statusbridge.display.BACKEND_TEXTS)
            f"{backend_text(STATUS_DIR).how_it_works}; this page reads only that snapshot, "
            + ("and redraws when it changes (pushed)." if pushed else "twice a second.")
        )
    with bars_place:
        batches()
    chart_and_health()
    with st.sidebar:
        new_batch_form()


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """``sbst.lifespan``, and the page's managers made in the background at start: the
    first one took a good part of the first page's first run."""
    async with sbst.lifespan(app):
        threading.Thread(target=_make_managers, name="demo-managers", daemon=True).start()
        yield


def _make_managers() -> None:
    for executor in EXECUTORS.values():
        manager(executor)


if __name__ == "__main__":
    page()
else:
    # Imported by `streamlit run demo_app.py` (it looks for `app`): the server, with push.
    # The page has no auth of its own: keep the server on 127.0.0.1 (see docs/streamlit.md).
    # lifespan: stopping the server stops the jobs and worker processes it started.
    app = st.App(__file__, routes=sbst.push_routes(STATUS_DIR), lifespan=lifespan)
