"""statusbridge demo: submit simulated batches, watch them live, cancel them.

Run: ``streamlit run demo_app.py``. Folders: ``batch_status/`` and ``batches/``
under the working directory, or ``$STATUSBRIDGE_DIR`` / ``$STATUSBRIDGE_BATCH_DIR``
(``STATUSBRIDGE_DIR`` may be a ``redis://`` URL: batches then live there too).
Jobs written by another program show up too: ``statusbridge simulate --jobs 20``.
"""

from __future__ import annotations

import os
import random
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

st.set_page_config(page_title="statusbridge demo", layout="wide")
cache = sbst.get_cache(STATUS_DIR)


def manager(executor: Literal["thread", "process"] = "thread") -> BatchManager:
    return sbst.get_manager(BATCH_DIR, STATUS_DIR, executor=executor)


def known_batches() -> list[BatchSummary]:
    """Batches of both managers (threads, processes), newest first, each once."""
    seen: dict[str, BatchSummary] = {}
    for executor in EXECUTORS.values():
        for summary in manager(executor).list_batches():
            current = seen.get(summary.id or "")
            if current is None or current.state == "created":
                seen[summary.id or ""] = summary
    return list(seen.values())


st.title("statusbridge demo")
st.caption(
    "Workers write one JSON file per job; a watchdog observer keeps an in-memory snapshot "
    "current; this page reads only that snapshot, twice a second."
)

with st.sidebar:
    st.header("New batch")
    with st.form("new-batch"):
        jobs = st.number_input("Number of jobs", min_value=1, max_value=50, value=6, step=1)
        duration = st.number_input("Seconds per job", min_value=0.2, max_value=60.0, value=3.0,
                                   step=0.5)
        fail_rate = st.slider("Failure rate", min_value=0.0, max_value=1.0, value=0.2, step=0.05)
        executor_label = st.radio("Executor", list(EXECUTORS), horizontal=True)
        submitted = st.form_submit_button("Start batch", type="primary")
    if submitted:
        rng = random.Random()
        params = [
            {"duration": float(duration),
             "fail_at": rng.randint(2, STEPS) if rng.random() < fail_rate else None}
            for _ in range(int(jobs))
        ]
        chosen = manager(EXECUTORS[executor_label])
        batch_id = chosen.create_custom_batch(params, f"{int(jobs)} jobs on {executor_label}")
        chosen.start_batch(batch_id, simulated_job)
        st.session_state["selected"] = batch_id
        st.success(f"Started {batch_id}")
    st.divider()
    st.markdown(
        "**Another program** can write statuses too; run\n\n"
        f"`statusbridge simulate --jobs 20 --dir {STATUS_DIR}`\n\nand watch them appear below."
    )


@st.fragment(run_every=0.5)
def live_batches() -> None:
    batches = known_batches()
    if not batches:
        st.info("No batches yet: start one from the sidebar.")
        return
    ids = [b.id for b in batches]
    default = st.session_state.get("selected")
    index = ids.index(default) if default in ids else 0
    selected = st.selectbox(
        "Batch", ids, index=index,
        format_func=lambda i: next(f"{b.name} — {b.state} ({i})" for b in batches if b.id == i),
    )
    st.session_state["selected"] = selected
    owner = manager("process") if selected in manager("process").batches else manager()
    summary = owner.get_batch_status(selected or "")
    if summary is None:
        return
    sbst.batch_summary(summary)
    jobs = owner.get_batch_jobs(summary.id or "")
    left, right = st.columns([1, 5])
    if left.button("Cancel batch", disabled=summary.is_done, key="cancel-batch"):
        st.toast(f"Asked {owner.cancel_batch(summary.id or '')} job(s) to stop")
    right.caption(str(summary))
    sbst.job_table(jobs, key="jobs")
    with st.expander("Cancel single jobs"):
        if summary.is_done:
            st.caption("Every job of this batch has finished.")
        else:
            sbst.cancel_buttons(owner, jobs, key="cancel-job")


@st.fragment(run_every=0.5)
def live_others() -> None:
    snap = cache.snapshot()
    mine = {b.id for b in known_batches()}
    others = [b for b in snap.batch_ids() if b not in mine]
    loose = [j for j in snap.values() if j.batch_id is None]
    if not others and not loose:
        st.caption("Nothing from other programs yet.")
        return
    for batch_id in others[-3:]:
        sbst.batch_summary(snap.summary(batch_id).with_name(batch_id))
        sbst.job_table(snap.batch(batch_id), key=f"other-{batch_id}")
    if loose:
        st.caption(f"{len(loose)} job(s) outside any batch")
        sbst.job_table(loose, key="loose")


@st.fragment(run_every=1.0)
def live_chart_and_health() -> None:
    snap = cache.snapshot()
    chart = sbst.finished_over_time(snap.values())
    if chart["time"]:
        st.line_chart(chart, x="time", y="finished", height=200)
    else:
        st.caption("No finished jobs yet.")
    with st.expander("Cache health"):
        sbst.health_panel(cache.health())


st.subheader("Batches")
live_batches()
st.subheader("Jobs from other programs")
live_others()
st.subheader("Jobs finished over time")
live_chart_and_health()
