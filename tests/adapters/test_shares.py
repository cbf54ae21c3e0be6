"""'100%' only where every job completed (issue 22, item 7).

One definition (``BatchSummary.completed_share``, ``display.job_share``), and every view that
draws a bar or a percentage uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from statusbridge import BatchJob, BatchStatus
from statusbridge.cache._snapshot import summarize
from statusbridge.cli._render import bar, job_table, summary_line
from statusbridge.display import done_text, job_share, percent

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def failed_and_cancelled() -> list[BatchJob]:
    """The issue's batch: 1 failed and 5 cancelled, one of them after its last step."""
    jobs = [BatchJob(f"b-{i}", BatchStatus.CANCELLED, batch_id="b", progress=0.4) for i in range(4)]
    jobs.append(BatchJob("b-4", BatchStatus.CANCELLED, batch_id="b", progress=1.0,
                         message="step 20/20"))  # fmt: skip
    jobs.append(BatchJob("b-5", BatchStatus.FAILED, batch_id="b", progress=0.5,
                         error_message="RuntimeError: no"))  # fmt: skip
    return jobs


def test_done_share_and_completed_share() -> None:
    summary = summarize(failed_and_cancelled(), batch_id="b")
    assert summary.is_done and summary.done_share == 1.0
    assert summary.completed_share == 0.0 and not summary.all_completed
    assert "100%" not in str(summary) and str(summary).startswith("b: cancelled 0%")
    assert done_text(summary) == "6 of 6 done"

    five_of_six = [BatchJob(f"j{i}", BatchStatus.COMPLETED) for i in range(5)]
    summary = summarize([*five_of_six, BatchJob("x", BatchStatus.FAILED)])
    assert summary.completed_share < 1.0 and percent(summary.completed_share) == "83%"

    everything = summarize([*five_of_six, BatchJob("x", BatchStatus.COMPLETED)])
    assert everything.completed_share == 1.0 and everything.all_completed
    assert "100%" in str(everything)

    at_the_end = summarize([BatchJob("r", BatchStatus.RUNNING, progress=1.0), *five_of_six])
    assert percent(at_the_end.completed_share) == "99%"  # the seed app's "running 100%"
    assert summarize([]).completed_share == 0.0


def test_a_job_cancelled_after_its_last_step_is_not_full() -> None:
    job = failed_and_cancelled()[4]
    share = job_share(job)
    assert share is not None and share < 1.0
    assert bar(share) == "[#########-]  99%"
    assert job_share(BatchJob("c", BatchStatus.COMPLETED)) == 1.0  # reported nothing: still done
    assert job_share(BatchJob("p", BatchStatus.PENDING)) is None


def test_terminal_views_never_say_100_for_a_batch_that_did_not_complete() -> None:
    jobs = failed_and_cancelled()
    assert "100%" not in job_table(jobs, NOW, width=80)
    assert "100%" not in job_table(jobs, NOW, fit=False)
    assert "100%" not in summary_line(summarize(jobs))

    from rich.console import Console

    from statusbridge.cli._live import JobIndex, render

    console = Console(width=80, record=True, color_system=None)

    class _Snap:  # what render needs of a snapshot
        def summary(self, _batch: str | None) -> object:
            return summarize(jobs)

    index = JobIndex(None, ())
    for job in jobs:
        index._put(job)
    frame = render(_Snap(), index, folder="f", now=NOW, height=24, width=80, invalid={})  # type: ignore[arg-type]
    console.print(frame)
    text = console.export_text()
    assert "100%" not in text and "6 of 6 done" in text


def test_streamlit_labels_and_bars() -> None:
    pytest.importorskip("streamlit")
    from statusbridge.streamlit import _bar_value, job_rows, summary_text

    summary = summarize(failed_and_cancelled(), batch_id="b")
    assert _bar_value(summary) == 0.0 and "100%" not in summary_text(summary)
    rows = job_rows(failed_and_cancelled(), NOW)
    assert max(r["progress"] for r in rows) < 1.0


@pytest.mark.slow  # runs the example in a subprocess
def test_seed_app_says_100_only_when_completed_and_its_cancel_works(tmp_path: Path) -> None:
    """The README's seed application, run for real: no "running 100%", no "None" as a failed
    job's result, and its cancelled batch ends cancelled (items 7, 10 and 13)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_app.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summaries = [line for line in lines if line.startswith("Test:")]
    assert summaries, done.stdout
    assert all("100%" not in line for line in summaries), done.stdout  # 'bad' fails
    assert all("None" not in line for line in lines), done.stdout
    assert "second batch: cancelled" in done.stdout, done.stdout
