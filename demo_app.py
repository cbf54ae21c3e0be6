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

import os
import random
import shlex
from datetime import UTC, datetime
from typing import Literal

import streamlit as st

from statusbridge import BatchManager, BatchSummary
from statusbridge import streamlit as sbst
from statusbridge.demo import STEPS, simulated_job
from statusbridge.store import is_url

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


def page() -> None:
    st.set_page_config(page_title="statusbridge demo", layout="wide")
    sbst.hide_running_indicator()
    sbst.get_cache(STATUS_DIR)
    pushed = sbst.push_available(STATUS_DIR)
    st.title("statusbridge demo")
    st.caption(
        "Workers write one JSON file per job; a watchdog observer keeps an in-memory snapshot "
        "current; this page reads only that snapshot, "
        + ("and redraws when it changes (pushed)." if pushed else "twice a second.")
    )
    with st.sidebar:
        st.header("New batch")
        with st.form("new-batch"):
            jobs = st.number_input("Number of jobs", min_value=1, max_value=50, value=6, step=1)
            duration = st.number_input(
                "Seconds per job", min_value=0.2, max_value=60.0, value=3.0, step=0.5
            )
            fail_rate = st.slider(
                "Failure rate", min_value=0.0, max_value=1.0, value=0.2, step=0.05
            )
            executor_label = st.radio("Executor", list(EXECUTORS), horizontal=True)
            submitted = st.form_submit_button("Start batch", type="primary")
        if submitted:
            batch_id = start_batch(int(jobs), float(duration), fail_rate, executor_label or "")
            st.session_state["selected"] = batch_id
            st.success(f"Started {batch_id}")
        st.divider()
        st.markdown(
            "**Another program** can write statuses too; run\n\n"
            f"`statusbridge simulate --jobs 20 --dir {shlex.quote(STATUS_DIR)}`"  # a URL has a `?`
            "\n\nand watch them appear."
        )

    live = sbst.live_fragment(STATUS_DIR)

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
        summary = next(b for b in listed if b.id == chosen)
        st.caption(str(summary))  # the counts (the bar is in the list above)
        jobs = sbst.get_cache(STATUS_DIR).snapshot().batch(chosen or "")
        picked = sbst.job_table(jobs, key=f"jobs-{chosen}", selectable=True)
        unfinished = [j for j in jobs if j.id in picked and not j.is_finished]
        left, right = st.columns(2)
        queue = manager().queue
        if left.button(
            f"Cancel selected ({len(unfinished)})", disabled=not unfinished, key="cancel-selected"
        ):
            st.toast(f"Asked {sum(queue.cancel(j.id) for j in unfinished)} job(s) to stop")
        if right.button("Cancel batch", disabled=summary.is_done, key="cancel-batch"):
            # A manager's batch: its cancel also reaches jobs whose records are not
            # written yet (start_batch writes them in the background).
            owner = next((m for m in map(manager, EXECUTORS.values()) if chosen in m.batches), None)
            if owner is not None and chosen:
                stopped = owner.cancel_batch(chosen)
            else:
                stopped = sum(queue.cancel(j.id) for j in jobs if not j.is_finished)
            st.toast(f"Asked {stopped} job(s) to stop")
        if picked:
            sbst.job_details(j for j in jobs if j.id in picked)
        else:
            st.caption("Select rows to cancel them or to read their whole message.")

    # A chart of the last minutes needs no more than one redraw a second, and each
    # redraw of it would hold up the tables' next one (one fragment rerun at a time).
    @sbst.live_fragment(STATUS_DIR, gap_ms=1000)
    def chart_and_health() -> None:
        cache = sbst.get_cache(STATUS_DIR)
        with st.expander("Jobs finished over time, cache health"):
            chart = sbst.finished_over_time(cache.snapshot().values())
            if chart["time"]:
                st.line_chart(chart, x="time", y="finished", height=200)
            else:
                st.caption("No finished jobs yet.")
            sbst.health_panel(cache.health())

    batches()
    chart_and_health()


if __name__ == "__main__":
    page()
else:
    # Imported by `streamlit run demo_app.py` (it looks for `app`): the server, with push.
    # The route has no auth of its own: keep the server on 127.0.0.1 (see the README).
    # lifespan: stopping the server stops the jobs and worker processes it started.
    app = st.App(__file__, routes=sbst.push_routes(STATUS_DIR), lifespan=sbst.lifespan)
