"""The Streamlit adapter and demo app: AppTest for the logic, headless Chromium end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import (
    APP,
    ARTIFACTS,
    HAVE_CHROMIUM,
    NO_CHROMIUM,
    ROOT,
    chromium,
    demo_server,
    server_log_problems,
)
from support.waiting import poll_until, wait_until

st = pytest.importorskip("streamlit", reason="the demo extra is not installed")
from streamlit.testing.v1 import AppTest  # noqa: E402

from statusbridge import BatchStatus, StatusCache, StatusStore  # noqa: E402
from statusbridge import streamlit as sbst  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """AppTest installs each script as ``sys.modules["__main__"]`` and leaves it there; a
    process another test spawns later would run that script first. Put pytest's back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    status_dir, batch_dir = tmp_path / "batch_status", tmp_path / "batches"
    monkeypatch.setenv("STATUSBRIDGE_DIR", str(status_dir))
    monkeypatch.setenv("STATUSBRIDGE_BATCH_DIR", str(batch_dir))
    yield status_dir, batch_dir
    # Resources are per server process; stop the ones this test's app created.
    for executor in ("thread", "process"):
        sbst.get_manager(batch_dir, status_dir, executor=executor).shutdown(wait=True)
    sbst.get_cache(status_dir).close()
    st.cache_resource.clear()


def app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def submit(at: AppTest, jobs: int, seconds: float, fail_rate: float, executor: str) -> None:
    by_label = {w.label: w for w in at.number_input}
    by_label["Number of jobs"].set_value(jobs)
    by_label["Seconds per job"].set_value(seconds)
    at.slider[0].set_value(fail_rate)
    at.radio[0].set_value(executor)
    next(b for b in at.button if b.label == "Start batch").click()
    at.run()
    assert not at.exception, at.exception


def page_text(at: AppTest) -> str:
    """The page's text as a reader sees it: Markdown escapes (job text is escaped) undone."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [str(s.value) for s in at.success] + [str(i.value) for i in at.info]
    text = "\n".join(str(p) for p in parts)
    return re.sub(r"\\(.)", r"\1", text).replace("\u200b", "")


class TestAppLogic:
    @pytest.mark.slow
    def test_empty_start(self, folders: tuple[Path, Path]) -> None:
        at = app()
        assert "No batches yet" in page_text(at)
        assert at.title[0].value.endswith("statusbridge demo")

    @pytest.mark.parametrize("executor", ["threads", "processes"])
    @pytest.mark.slow
    def test_submit_render_complete(self, folders: tuple[Path, Path], executor: str) -> None:
        at = app()
        submit(at, jobs=3, seconds=0.2, fail_rate=0.0, executor=executor)
        assert any("Started batch-" in str(s.value) for s in at.success)
        status_dir, batch_dir = folders
        mgr = sbst.get_manager(
            batch_dir, status_dir, executor="process" if executor == "processes" else "thread"
        )
        batch_id = mgr.list_batches()[0].id
        assert batch_id is not None
        wait_until(lambda: mgr.get_batch_status(batch_id).is_done, 60)  # type: ignore[union-attr]
        # The table is drawn from the page's cache, the counts from the manager (which
        # knows its own writes at once): wait for the cache too, or a row may still be
        # the last job's older record (3.12, once).
        cache = sbst.get_cache(status_dir)
        wait_until(lambda: cache.snapshot().summary(batch_id).completed == 3, 60)
        at.run()
        assert not at.exception
        assert f"3 jobs on {executor}: completed 100% (3 completed)" in page_text(at)
        table = at.dataframe[0].value
        assert list(table["progress"]) == [1.0, 1.0, 1.0]
        assert [list(s) for s in table["state"]] == [["✓ completed"]] * 3  # a coloured label

    @pytest.mark.slow
    def test_cancel_batch_from_the_page(self, folders: tuple[Path, Path]) -> None:
        at = app()
        submit(at, jobs=4, seconds=30.0, fail_rate=0.0, executor="threads")
        next(b for b in at.button if b.label == "Cancel batch").click()
        at.run()
        status_dir, batch_dir = folders
        mgr = sbst.get_manager(batch_dir, status_dir)
        batch_id = mgr.list_batches()[0].id or ""
        wait_until(lambda: mgr.get_batch_status(batch_id).is_done, 60)  # type: ignore[union-attr]
        summary = mgr.get_batch_status(batch_id)
        assert summary is not None
        assert summary.counts[BatchStatus.CANCELLED] == 4

    @pytest.mark.slow
    def test_other_programs_and_escaping(self, folders: tuple[Path, Path]) -> None:
        status_dir, _ = folders
        StatusStore(status_dir).update(
            "ext-1", batch_id="external", status="running", progress=0.5,
            message="<script>alert('x')</script> **not bold**",
        )  # fmt: skip
        at = app()
        frames = [df.value for df in at.dataframe]
        messages = [m for frame in frames for m in frame["message"]]
        # Shown as data, verbatim: never interpreted as HTML or markdown.
        assert "<script>alert('x')</script> **not bold**" in messages
        assert not any("<script>" in str(m.value) for m in at.markdown)

    @pytest.mark.slow
    def test_every_batch_in_the_folders_newest_first(self, folders: tuple[Path, Path]) -> None:
        status_dir, _ = folders
        # examples/seed_app.py, run where the demo keeps its folders: batches "Test", "Cancelled".
        seed_app = [sys.executable, str(ROOT / "examples" / "seed_app.py")]
        subprocess.run(seed_app, cwd=status_dir.parent, check=True, capture_output=True, timeout=99)
        StatusStore(status_dir).update("late-1", batch_id="written-later", status="running")
        at = app()
        labels = [str(p.proto.text) for p in at.get("progress")]
        shown = [label.replace("\\", "") for label in labels]  # Markdown escapes removed
        expected = [
            ":blue[written-later: running",
            ":orange[Cancelled: cancelled",
            ":red[Test: failed",
        ]
        assert [text.startswith(e) for text, e in zip(shown, expected, strict=True)] == [True] * 3
        assert "Batches (3, newest first)" in [h.value for h in at.subheader]

    def test_whole_messages_of_selected_jobs(self) -> None:
        long = "RuntimeError: " + "a very long explanation " * 40
        at = AppTest.from_function(_details_page, args=(long,), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        assert [c.value for c in at.code] == [long]  # whole, as text (st.code escapes)

    def test_a_big_list_is_paged_running_and_failed_first(self) -> None:
        at = AppTest.from_function(_big_table_page, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        assert len(table) == 50  # one page is sent, not 120 rows
        assert list(table["job"][:4]) == ["j-100", "j-101", "j-007", "j-000"]
        states = [list(s) for s in table["state"][:4]]
        assert states == [["▶ running"], ["▶ running"], ["✗ failed"], ["… pending"]]
        assert any("jobs 1 to 50 of 120, running and failed first" in c.value for c in at.caption)
        page = at.number_input(key="big-page")
        assert page.label == "Page (of 3)"
        page.set_value(3).run()
        table = at.dataframe[0].value
        assert len(table) == 20 and list(table["job"])[-1] == "j-119"
        assert any("jobs 101 to 120 of 120" in c.value for c in at.caption)

    def test_a_short_list_keeps_its_order_and_has_no_pages(self) -> None:
        at = AppTest.from_function(_big_table_page, kwargs={"total": 50}, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        assert list(at.dataframe[0].value["job"][:2]) == ["j-000", "j-001"]
        assert not at.number_input

    def test_a_selection_whose_rows_now_hold_other_jobs_is_cleared(self) -> None:
        at = AppTest.from_function(_selection_keys_page, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        # Row 1 held "b" and still does: kept. Then "b" moved to row 0: a new table.
        assert [t.value for t in at.text] == ["t-0", "t-0", "t-1", "t-1"]


def _selection_keys_page() -> None:
    import streamlit as st

    from statusbridge._streamlit_table import selection_key

    st.session_state["t-shown"] = ("a", "b")  # drawn last run, row 1 ("b") selected
    st.session_state["t-0"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    st.text(selection_key("t", ["a", "b"]))  # the same rows
    st.text(selection_key("t", ["a", "b", "c"]))  # one more: row 1 still "b"
    st.text(selection_key("t", ["b", "a"]))  # "a" started: row 1 is "a" now
    st.text(selection_key("t", ["b", "a"]))  # the new table has no selection yet


def _big_table_page(total: int = 120) -> None:
    from statusbridge import BatchJob
    from statusbridge import streamlit as sbst

    jobs = [BatchJob(f"j-{i:03d}", "pending") for i in range(total)]  # type: ignore[arg-type]
    if total > 100:
        jobs[100:102] = [BatchJob(f"j-{i}", "running") for i in (100, 101)]  # type: ignore[arg-type]
    jobs[7] = BatchJob("j-007", "failed", error_message="E")  # type: ignore[arg-type]
    sbst.job_table(tuple(jobs), key="big", selectable=True)


def test_the_page_order_is_worked_out_once_per_batch_change() -> None:
    from statusbridge import BatchJob
    from statusbridge._streamlit_table import attention_first

    jobs = tuple(BatchJob(f"j-{i}", "running" if i % 3 else "completed") for i in range(9))  # type: ignore[arg-type]
    first = attention_first(jobs)
    assert [j.id for j in first[:3]] == ["j-1", "j-2", "j-4"]
    assert attention_first(jobs) is first  # the same tuple: remembered, not walked again
    assert attention_first(tuple(jobs)) is first  # tuple() of a tuple is that tuple
    assert attention_first(list(jobs)) == first and attention_first(list(jobs)) is not first


def _details_page(long: str) -> None:
    from statusbridge import BatchJob
    from statusbridge import streamlit as sbst

    sbst.job_details([BatchJob("j-1", "failed", error_message=long)])  # type: ignore[arg-type]


SCRIPT_WITH_PROCESSES = """
import os
from pathlib import Path

import streamlit as st

from statusbridge import streamlit as sbst

here = Path(__file__).parent
with open(here / "runs.txt", "a") as runs:  # who ran this script: the server only
    runs.write(f"{os.getpid()}\\n")


def local_job(params):
    return params


manager = sbst.get_manager(here / "batches", here / "status", executor="process")
if st.button("local"):
    manager.start_batch(manager.create_custom_batch([{}], "local"), local_job)
if st.button("module"):
    from jobs import square

    manager.start_batch(manager.create_custom_batch([{"x": 3}, {"x": 4}], "module"), square)
"""


@pytest.fixture
def process_app(tmp_path: Path) -> Iterator[tuple[AppTest, Path]]:
    (tmp_path / "app.py").write_text(SCRIPT_WITH_PROCESSES)
    (tmp_path / "jobs.py").write_text("def square(params):\n    return params['x'] ** 2\n")
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    try:
        yield at, tmp_path
    finally:
        sbst.get_manager(tmp_path / "batches", tmp_path / "status", executor="process").shutdown()
        sbst.get_cache(tmp_path / "status").close()
        st.cache_resource.clear()


@pytest.mark.slow
def test_process_workers_never_run_the_script(process_app: tuple[AppTest, Path]) -> None:
    at, folder = process_app
    next(b for b in at.button if b.label == "module").click()
    at.run()
    assert not at.exception, at.exception
    manager = sbst.get_manager(folder / "batches", folder / "status", executor="process")
    batch_id = manager.list_batches()[0].id or ""
    wait_until(lambda: manager.get_batch_status(batch_id).is_done, 60)  # type: ignore[union-attr]
    jobs = manager.get_batch_jobs(batch_id)
    assert [(j.status, j.result) for j in jobs] == [(BatchStatus.COMPLETED, 9),
                                                    (BatchStatus.COMPLETED, 16)]  # fmt: skip
    # Two runs, both here: spawned workers did not execute app.py (they used to, once each).
    assert (folder / "runs.txt").read_text().split() == [str(os.getpid())] * 2


def test_a_job_function_from_the_script_names_where_to_move_it(
    process_app: tuple[AppTest, Path],
) -> None:
    at, folder = process_app
    next(b for b in at.button if b.label == "local").click()
    at.run()
    assert at.exception, "a script-defined function was sent to worker processes"
    message = at.exception[0].message
    assert "local_job is defined in the Streamlit script app.py" in message
    assert f"{folder / 'jobs.py'}" in message and "from jobs import local_job" in message


def test_job_rows_and_chart_data() -> None:
    from datetime import UTC, datetime, timedelta

    from statusbridge import BatchJob

    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    jobs = [
        BatchJob("a", "completed", started_at=t0, completed_at=t0 + timedelta(seconds=3)),  # type: ignore[arg-type]
        BatchJob("b", "failed", error_message="E: x", started_at=t0,  # type: ignore[arg-type]
                 completed_at=t0 + timedelta(seconds=12)),
        BatchJob("c", "running", progress=0.25, message="going", started_at=t0),  # type: ignore[arg-type]
    ]  # fmt: skip
    jobs.append(BatchJob("d", "pending"))  # type: ignore[arg-type]
    jobs.append(BatchJob("e", "running", progress=0.95, started_at=t0))  # type: ignore[arg-type]
    rows = sbst.job_rows(jobs, now=t0 + timedelta(seconds=20))
    assert [r["elapsed"] for r in rows] == ["3s", "12s", "20s", "", "20s"]
    assert [r["eta"] for r in rows] == ["", "", "1m 00s", "", "1s"]  # display.eta_seconds
    assert rows[1]["message"] == "E: x" and rows[2]["progress"] == 0.25
    assert rows[3]["progress"] is None and rows[3]["message"] == ""  # blank, never "None"
    assert rows[4]["progress"] < 1.0 and rows[0]["progress"] == 1.0
    chart = sbst.finished_over_time(jobs, bucket_seconds=5)
    assert chart["finished"] == [1, 2]


def test_a_running_jobs_times_as_clock_times_do_not_move_with_the_clock() -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from statusbridge import BatchJob, BatchStatus

    t0 = datetime(2030, 1, 1, 9, 0, 0, tzinfo=UTC)
    # 25% done 20 s after its start: 60 s left then.
    running = BatchJob("c", BatchStatus.RUNNING, progress=0.25, started_at=t0,
                       updated_at=t0 + timedelta(seconds=20))  # fmt: skip
    done = BatchJob("a", BatchStatus.COMPLETED, started_at=t0,
                    completed_at=t0 + timedelta(seconds=3))  # fmt: skip
    paris = ZoneInfo("Europe/Paris")  # UTC+1 in January
    for later in (20, 50, 3600):
        rows = sbst.job_rows([running, done], t0 + timedelta(seconds=later), zone=paris)
        assert (rows[0]["elapsed"], rows[0]["eta"]) == ("10:00:00", "10:01:20")
        assert (rows[1]["elapsed"], rows[1]["eta"]) == ("3s", "")  # finished: durations
    next_day = sbst.job_rows([running], t0 + timedelta(days=1), zone=UTC)[0]
    assert (next_day["elapsed"], next_day["eta"]) == ("Jan 01 09:00", "Jan 01 09:01")


def test_failed_and_cancelled_batches_never_look_completed() -> None:
    from statusbridge import BatchJob
    from statusbridge.cache._snapshot import summarize

    done = summarize([BatchJob("a", "completed"), BatchJob("b", "completed")], name="ok")  # type: ignore[arg-type]
    failed = summarize([BatchJob("a", "completed"), BatchJob("b", "failed")], name="f")  # type: ignore[arg-type]
    cancelled = summarize([BatchJob("a", "cancelled"), BatchJob("b", "cancelled")], name="c")  # type: ignore[arg-type]
    almost = summarize([BatchJob("a", "completed"), BatchJob("b", "running", progress=0.995)])  # type: ignore[arg-type]
    assert sbst.summary_text(done) == "ok: completed, 100%"
    assert sbst.summary_text(failed) == "f: failed, 1 of 2 completed (1 failed)"
    assert sbst.summary_text(cancelled) == "c: cancelled, 0 of 2 completed (2 cancelled)"
    assert sbst.summary_text(almost) == "All jobs: running, 99%"
    assert str(almost) == "all jobs: running 99% (1 running, 1 completed)"
    # The bars: full only for a batch that completed.
    assert [sbst._bar_value(s) for s in (done, failed, cancelled)] == [1.0, 0.5, 0.0]
    assert sbst._bar_value(almost) < 1.0


# -- end to end, in a real browser ---------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    with demo_server(tmp_path) as (url, _, log):
        yield url, tmp_path, log


def test_stopping_the_server_ends_its_push_streams_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statusbridge._streamlit_push import EVENTS_PATH, STREAM_SECONDS, TOKEN_ENV

    monkeypatch.setenv(TOKEN_ENV, "test-token")
    with demo_server(tmp_path) as (url, proc, log):
        events = f"{url}{EVENTS_PATH}?token=test-token"
        streams = [urllib.request.urlopen(events, timeout=60) for _ in range(3)]
        for stream in streams:
            assert stream.readline().startswith(b"retry:")  # open, and waiting for changes
        started = time.monotonic()
        proc.terminate()  # SIGTERM, as a service manager stops it
        for stream in streams:
            rest = stream.read()  # returns when the server ends the stream
            assert b"Traceback" not in rest
            stream.close()
        proc.wait(60)
        took = time.monotonic() - started
    # Before, each open stream ran out its own timer first (9.2 s with one page open).
    assert took < STREAM_SECONDS, f"the server took {took:.1f} s to stop"
    assert "Traceback" not in log.read_text()


@pytest.mark.skipif(not HAVE_CHROMIUM and not os.environ.get("CI"), reason=NO_CHROMIUM)
@pytest.mark.timeout(400)  # a server, a browser and two batches: let its own waits say what hung
@pytest.mark.slow
def test_browser_end_to_end(server: tuple[str, Path, Path]) -> None:
    url, tmp_path, server_log = server
    # At 900 px: the narrow layout the page must work in.
    with chromium(tmp_path / "chrome-profile") as driver:
        console = drive_the_demo(driver, url, tmp_path)
    # Vega logged 'Infinite extent for field "time"' (and "finished") on each chart redraw.
    assert not [e for e in console if "Infinite extent" in e["message"]], console
    # Workers never touched Streamlit (the processes batch included), and nothing was
    # deprecated: a server log without warnings or tracebacks.
    assert not server_log_problems(server_log), server_log.read_text()


def drive_the_demo(driver: Any, url: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Two batches started from the form, 30 timed writes from another program; the console."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ARTIFACTS.mkdir(exist_ok=True)

    def text() -> str:  # innerText: one cheap call, where WebDriver's .text walks the page
        return str(driver.execute_script("return document.body.innerText"))

    def set_number(label: str, value: str) -> None:
        field = driver.find_element(By.CSS_SELECTOR, f'input[aria-label="{label}"]')
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)

    def start_batch(jobs: str, seconds: str, executor: str) -> None:
        set_number("Number of jobs", jobs)
        set_number("Seconds per job", seconds)
        # The slider's range input is visually hidden: focus it, then press Home (rate 0).
        rate = driver.find_element(
            By.CSS_SELECTOR, 'input[type="range"][aria-label="Failure rate"]'
        )
        driver.execute_script("arguments[0].focus()", rate)
        ActionChains(driver).send_keys(Keys.HOME).perform()
        wait_until(lambda: float(rate.get_attribute("value") or 1) == 0.0, 60, "failure rate 0")
        choice = next(e for e in driver.find_elements(By.CSS_SELECTOR, "label")
                      if e.text.strip() == executor)  # fmt: skip
        choice.click()
        start = next(b for b in driver.find_elements(By.TAG_NAME, "button")
                     if b.text.strip() == "Start batch")  # fmt: skip
        start.click()

    try:
        t0 = time.perf_counter()
        # Under heavy load, headless Chromium has (1 run in ~15) kept a blank page
        # although the server ran the script: load the page again, at most twice,
        # before calling it a failure. The reloads are counted in the timings file.
        reloads = 0
        for reloads in range(3):  # noqa: B007 - the last value is reported below
            driver.get(url)
            if poll_until(lambda: "No batches yet" in text(), 30):
                break
        wait_until(lambda: "No batches yet" in text(), 30, "the first page")
        wait_until(
            lambda: driver.find_elements(By.CSS_SELECTOR, 'input[aria-label="Number of jobs"]'),
            60, "the form",
        )  # fmt: skip
        first_page = time.perf_counter() - t0
        assert "redraws when it changes (pushed)" in text()  # served through st.App: push
        # The header's "Running…/Stop" badge would blink on every live redraw: hidden.
        assert driver.execute_script(
            "const e = document.querySelector('[data-testid=stStatusWidget]');"
            "return !e || getComputedStyle(e).visibility === 'hidden'"
        )
        # The records are the truth; the page shows them later. So each batch is followed
        # in the records, and the page is waited for only to show each state.
        with StatusCache(tmp_path / "batch_status") as records:
            for executor in ("processes", "threads"):
                known = set(records.snapshot().batch_ids())
                start_batch("3", "2", executor)
                batch_id = wait_until(
                    lambda k=known: set(records.snapshot().batch_ids()) - k,  # type: ignore[misc]
                    60,
                    "the records",
                ).pop()
                wait_until(lambda e=executor: f"3 jobs on {e}: " in text(), 60, "the batch")  # type: ignore[misc]
                # A picture of a batch while it runs, if the page catches it running.
                if poll_until(lambda e=executor: f"3 jobs on {e}: running, " in text(), 20):  # type: ignore[misc]
                    driver.save_screenshot(str(ARTIFACTS / f"demo-running-{executor}.png"))

                def batch_done(b: str = batch_id) -> bool:
                    summary = records.snapshot().summary(b)
                    return summary.total == 3 and summary.is_done

                wait_until(batch_done, 120, f"the {executor} batch to finish (in the records)")
                jobs = records.snapshot().batch(batch_id)
                # What the form sent and how each job ended.
                assert [(j.params["duration"], j.params["fail_at"], j.status) for j in jobs] == [
                    (2.0, None, BatchStatus.COMPLETED)
                ] * 3, [(j.id, dict(j.params), j.status, j.error_message) for j in jobs]
                wait_until(lambda e=executor: f"3 jobs on {e}: completed, 100%" in text(), 60,  # type: ignore[misc]
                           "the page to show it")  # fmt: skip
        driver.save_screenshot(str(ARTIFACTS / "demo-completed.png"))
        check_layout(driver, tmp_path)
        # The page follows writes from another program, pushed: write -> visible, each time.
        store = StatusStore(tmp_path / "batch_status")
        store.update("probe-0", batch_id="latency-probe", status="running", progress=0.005)
        wait_until(lambda: "latency-probe: running, 0%" in text(), 60, "the external batch")
        # Timed in the page: a MutationObserver notes the wall clock (shared with this
        # process: same machine) when the text first appears, so the test's own poll
        # interval is not counted in the latency.
        watch_for = """
            const wanted = arguments[0];
            window.__seenAt = null;
            const look = () => {
                if (window.__seenAt === null && document.body.innerText.includes(wanted)) {
                    window.__seenAt = Date.now();
                    observer.disconnect();
                }
            };
            const observer = new MutationObserver(look);
            observer.observe(document.body, {childList: true, subtree: true, characterData: true});
            look();
        """
        latencies = []
        for i in range(1, 31):
            driver.execute_script(watch_for, f"latency-probe: running, {i}%")
            t_write = time.time()
            store.update("probe-0", progress=(i + 0.5) / 100)
            seen_at = wait_until(
                lambda: driver.execute_script("return window.__seenAt"), 60, f"write {i}"
            )
            latencies.append(max(0.0, seen_at / 1000 - t_write))
        store.update("probe-0", status="failed", error_message="RuntimeError: " + "x" * 300)
        wait_until(lambda: "latency-probe: failed, 0 of 1 completed (1 failed)" in text(), 60,
                   "a failed batch")  # fmt: skip
        ms = sorted(1000 * x for x in latencies)
        p50, p90 = ms[len(ms) // 2], ms[int(len(ms) * 0.9)]
        driver.save_screenshot(str(ARTIFACTS / "demo-failed-batch.png"))
        (ARTIFACTS / "browser-timings.txt").write_text(
            f"first page {first_page:.2f}s ({reloads} reload(s))\n"
            f"write -> visible in browser, {len(ms)} writes: p50 {p50:.0f} ms, p90 {p90:.0f} ms, "
            f"max {ms[-1]:.0f} ms\n"
        )
    except BaseException:
        driver.save_screenshot(str(ARTIFACTS / "demo-failure.png"))
        (ARTIFACTS / "demo-failure.txt").write_text(text())  # what the page said
        raise
    finally:
        console: list[dict[str, Any]] = driver.get_log("browser")
    return console


def check_layout(driver: Any, tmp_path: Path) -> None:
    """Issue 22, items 6, 11 and 13, at 900 px (the window's size) and at 1920 px.

    At 900 px the sidebar stayed open and the table's message column was off screen,
    "Cancel batch" floated mid-page, the counts were drawn above the table before it,
    and the form's "Press Enter to submit form" hint overlapped its input. Screenshots of
    both widths are saved in the test's tmp dir (their paths printed): look at them.
    """
    from selenium.webdriver.common.by import By

    def box(css: str) -> dict[str, float]:
        found = driver.execute_script(
            "const e = document.querySelector(arguments[0]);"
            "return e && e.getBoundingClientRect().toJSON()", css
        )  # fmt: skip
        assert found, css
        return dict(found)

    def button(label: str) -> dict[str, float]:
        element = next(b for b in driver.find_elements(By.TAG_NAME, "button")
                       if b.text.strip() == label)  # fmt: skip
        return dict(driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()",
                                          element))  # fmt: skip

    # The chart's expander open, so that it is drawn and redrawn (the Vega warnings).
    for summary in driver.find_elements(By.CSS_SELECTOR, "summary"):
        if "finished over time" in summary.text:
            summary.click()
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-testid=stVegaLiteChart]"),
               60, "the chart")  # fmt: skip
    for width in (900, 1920):
        driver.set_window_size(width, 1100)
        inner = driver.execute_script("return window.innerWidth")
        wait_until(
            lambda i=inner: box("[data-testid=stDataFrame]")["right"] <= i,  # type: ignore[misc]
            30,
            "the table",
        )
        table = box("[data-testid=stDataFrame]")
        # The fixed columns (checkbox, job, state, progress, elapsed, ETA) take about
        # 400 px; the message column must have room beside them, on screen.
        assert table["width"] >= 400 + 150, (width, table)
        cancel, counts = button("Cancel batch"), driver.execute_script(
            "return [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".find(e => e.innerText.includes(' of 3 done')).getBoundingClientRect().toJSON()"
        )  # fmt: skip
        assert 0 <= cancel["top"] - table["bottom"] < 80, (cancel, table)  # with the table
        assert cancel["left"] - table["left"] < 300, (cancel, table)  # not mid-page
        assert counts["top"] > table["bottom"], (counts, table)  # under the table
        assert "Press Enter to submit" not in str(
            driver.execute_script("return document.body.innerText")
        )
        path = tmp_path / f"demo-{width}px.png"
        driver.save_screenshot(str(path))
        shutil.copy(path, ARTIFACTS / path.name)
        print(f"screenshot at {width} px: {path}")
    driver.set_window_size(900, 1100)


SEED_STYLE = """
import os

import streamlit as st

from statusbridge import StatusStore

store = StatusStore(os.environ["SB_SEED_DIR"])
for job in sorted(store.scan().values(), key=lambda j: j.id):
    st.progress(job.progress, text=f"{job.id} {job.status.value}")  # the seed's way
"""


def test_seed_style_progress_bar_works_in_every_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StatusStore(tmp_path / "status")
    store.update("a-pending")
    store.update("b-running-silent", status="running")
    store.update("c-running", status="running", progress=0.4)
    store.update("d-completed", status="completed")
    store.update("e-failed", status="failed", error_message="x")
    store.update("f-cancelled", status="cancelled")
    (tmp_path / "app.py").write_text(SEED_STYLE)
    monkeypatch.setenv("SB_SEED_DIR", str(tmp_path / "status"))
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception  # raised for pending and silent running jobs
    bars = [p.value for p in at.get("progress")]  # type: ignore[union-attr]
    assert bars == [0, 0, 40, 100, 0, 0]  # Streamlit keeps percents
    # "Unknown" stays available, and stays null in the file.
    jobs = store.scan()
    assert [jobs[i].reported_progress for i in sorted(jobs)] == [None, None, 0.4, None, None, None]
    stored = json.loads((tmp_path / "status" / "a-pending.json").read_text())
    assert stored["progress"] is None
    moved = store.update("b-running-silent", status="completed")
    assert (moved.progress, moved.reported_progress) == (1.0, None)
    assert store.update("a-pending", progress=0.25).reported_progress == 0.25


def test_a_foreign_host_name_is_refused_by_the_page_and_the_push_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: evil.test resolved to 127.0.0.1 reaches the server with its own Host.
    And the push route needs the token the server gives its pages (through the component)."""
    import http.client

    from statusbridge._streamlit_push import EVENTS_PATH, TOKEN_ENV

    monkeypatch.setenv(TOKEN_ENV, "test-token")
    with demo_server(tmp_path) as (url, _, log):
        port = int(url.rsplit(":", 1)[1])

        def get(path: str, host: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", path, headers={"Host": host})
                response = conn.getresponse()
                return response.status, response.read(200) if response.status != 200 else b""
            finally:
                conn.close()

        events = f"{EVENTS_PATH}?token=test-token"
        assert get(events, f"evil.test:{port}")[0] == 403  # before: 200 and a stream
        assert get(events, f"127.0.0.1:{port}")[0] == 200
        assert get(events, f"localhost:{port}")[0] == 200
        assert get(EVENTS_PATH, f"127.0.0.1:{port}")[0] == 403  # no token (before: 200)
        assert get(f"{EVENTS_PATH}?token=guess", f"127.0.0.1:{port}")[0] == 403
        # Streamlit's own websocket refuses the name too (with the shipped allowedHosts).
        ws = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            ws.request("GET", "/_stcore/stream", headers={
                "Host": f"evil.test:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
            })  # fmt: skip
            assert ws.getresponse().status != 101
        finally:
            ws.close()
    assert "Traceback" not in log.read_text()


HOSTILE = "![t](http://127.0.0.1:9/md-image.png) <img src=x> **b** \u202eevil"


def test_job_text_is_never_markup(folders: tuple[Path, Path]) -> None:
    """A batch name and a message from a record reach the page as text (issue 26, item 8).

    Before: ``st.caption(str(summary))`` rendered the name's image markdown (the image was
    fetched), and a U+202E reversed what followed it.
    """
    status_dir, batch_dir = folders
    from statusbridge import BatchManager

    with BatchManager(batch_dir, 1, status_dir) as manager:
        batch = manager.create_custom_batch([{}], HOSTILE)
    StatusStore(status_dir).update(
        f"{batch}-0000", batch_id=batch, status="failed", error_message=HOSTILE
    )
    at = app()
    shown: list[Any] = [e.value for kind in ("caption", "markdown") for e in at.get(kind)]  # type: ignore[union-attr]
    shown += [str(p.proto.text) for p in at.get("progress")]
    assert any("md\\-image" in str(v) for v in shown), shown  # the name is on the page
    for value in map(str, shown):
        # Markdown shows an escaped character as typed: only unescaped markup would render.
        assert not re.search(r"(?<!\\)(!\[|<img|\*\*b)", value), value
        assert "\u202e" not in value and "http://" not in value, value  # no bidi, no autolink
    assert sbst.escape_markdown(HOSTILE).count("\\!\\[") == 1


def test_escape_markdown() -> None:
    assert sbst.escape_markdown("a *b* [c](d)") == "a \\*b\\* \\[c\\]\\(d\\)"
    assert "\u200b" in sbst.escape_markdown("see www.example.org")
    assert sbst.escape_markdown("x\u202ey") == "x\\\\u202ey"
