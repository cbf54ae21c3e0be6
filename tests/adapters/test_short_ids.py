"""One id-shortening rule (``display.short_id``) in every view, at 80 columns (issue 22, item 6).

The issue's screens: ``ls`` showed five rows of ``batch-20261207-045840-39430f63~`` (the part
that tells jobs apart cut off), ``watch`` gave the message 7 characters, the Qt window and the
demo repeated the batch in every row.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from statusbridge import BatchJob, BatchStatus
from statusbridge.cache._snapshot import summarize
from statusbridge.cli._live import JobIndex, render
from statusbridge.cli._render import job_table
from statusbridge.display import short_id

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
BATCHES = ("batch-20261207-045840-39430f63e5ab1234", "batch-20261207-050743-b2f7a1ea1805b404")
MESSAGE = "step 3/20 resizing the images of the photos folder"


def two_batches() -> list[BatchJob]:
    return [
        BatchJob(f"{batch}-{i:04d}", BatchStatus.RUNNING, batch_id=batch, progress=0.4,
                 message=MESSAGE, created_at=NOW, started_at=NOW)
        for batch in BATCHES
        for i in range(5)
    ]  # fmt: skip


def test_short_id_keeps_the_tail() -> None:
    job = f"{BATCHES[0]}-0007"
    assert short_id(job) == job
    assert short_id(job, batch_id=BATCHES[0]) == "…-0007"
    assert short_id(job, batch_id=BATCHES[1]) == job  # another batch's prefix stays
    assert short_id(job, 12) == "…ab1234-0007"
    assert short_id("job-980fe6e520da-3", 12) == "…fe6e520da-3"  # Redis demo ids
    assert short_id(BATCHES[0], batch_id=BATCHES[0]) == BATCHES[0]  # never empty


def id_cells(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines[1:] if line.strip()]


def test_ls_at_80_columns_tells_every_job_apart() -> None:
    lines = job_table(two_batches(), NOW, width=80).splitlines()
    assert all(len(line) <= 80 for line in lines)
    ids = id_cells(lines)
    assert len(set(ids)) == 10, ids  # the issue: all rows looked alike
    assert all(i.endswith(f"-{n:04d}") for i, n in zip(ids, [*range(5)] * 2, strict=True))
    assert lines[0].split()[-1] == "MESSAGE" and "step 3/20 resizing" in lines[1]


def test_ls_of_one_batch_drops_the_batch_and_gives_the_message_the_room() -> None:
    jobs = [j for j in two_batches() if j.batch_id == BATCHES[0]]
    lines = job_table(jobs, NOW, width=80, batch=BATCHES[0]).splitlines()
    assert "BATCH" not in lines[0] and all(len(line) <= 80 for line in lines)
    assert id_cells(lines) == [f"…-{i:04d}" for i in range(5)]
    assert MESSAGE[:38] in lines[1]


def live_screen(batch: str | None) -> list[str]:
    jobs = two_batches() if batch is None else [j for j in two_batches() if j.batch_id == batch]
    snap = type("Snap", (), {"summary": lambda self, b: summarize(jobs)})()
    index = JobIndex(batch, ())
    for job in jobs:
        index._put(job)
    console = Console(width=80, record=True, color_system=None)
    console.print(render(snap, index, folder="f", now=NOW, height=24, width=80, invalid={}))
    return console.export_text().splitlines()


@pytest.mark.parametrize("batch", [None, BATCHES[1]])
def test_watch_at_80_columns(batch: str | None) -> None:
    lines = live_screen(batch)
    assert all(len(line) <= 80 for line in lines)
    head = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    rows = [line for line in lines[head + 1 :] if line.strip()]
    ids = [row.split()[0] for row in rows]
    assert len(set(ids)) == len(rows), ids
    message_at = lines[head].index("MESSAGE")
    shown = min(len(row) - message_at for row in rows)
    if batch is None:
        assert shown >= 15, lines  # the issue: 7 characters ("Runtime…")
    else:
        assert ids[0] == "…-0000" and shown >= 30, lines


def test_demo_rows_drop_the_batch_and_keep_the_tail() -> None:
    pytest.importorskip("streamlit")
    from statusbridge._streamlit_table import _ID_CHARS
    from statusbridge.streamlit import job_rows

    one = [j for j in two_batches() if j.batch_id == BATCHES[0]]
    assert [r["job"] for r in job_rows(one, NOW)] == [f"…-{i:04d}" for i in range(5)]
    redis_like = [BatchJob(f"job-980fe6e520da-{i}", batch_id="b", created_at=NOW) for i in range(3)]
    rows = [r["job"] for r in job_rows(redis_like, NOW)]  # the issue: 'job-980fe6e520' thrice
    assert len(set(rows)) == 3 and all(len(r) <= _ID_CHARS for r in rows), rows
    mixed = [r["job"] for r in job_rows(two_batches(), NOW)]
    assert len(set(mixed)) == 10 and all(len(r) <= _ID_CHARS for r in mixed), mixed
