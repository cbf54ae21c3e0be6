"""start_batch is one-shot: of several starters of one batch, exactly one runs it.

Starters in other processes, in threads of one process and in two managers of
one process, on a folder and on a real Redis server; and the shelf's
compare-and-swap they rely on. Before the fix every starter passed the
"already started" check, and the losers' failed submits marked the winner's
PENDING jobs FAILED.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from statusbridge import BatchManager, BatchStatus
from statusbridge.jobs import BatchDefinition
from statusbridge.jobs._definition import FinalCounts
from statusbridge.jobs._definition import settled as saving
from statusbridge.jobs._liveness import HOST
from statusbridge.record._model import utc_now
from statusbridge.store._shelf import Shelf, open_shelf

from support.waiting import wait_until
from support.workers import count_run, start_batch_at_gate

STARTERS = 4
JOBS = 6


@pytest.fixture
def folders(batch_locations: tuple[str, str]) -> tuple[str, str]:
    """(batch_dir, status_dir): two folders, or the same Redis URL for both."""
    return batch_locations


@pytest.fixture
def shelf(folders: tuple[str, str]) -> Iterator[Shelf]:
    opened = open_shelf(folders[0])
    try:
        yield opened
    finally:
        opened.close()


# -- the shelf's compare-and-swap --------------------------------------------------
class TestReplace:
    def test_wins_when_the_bytes_are_the_expected_ones(self, shelf: Shelf) -> None:
        shelf.put("doc", b"one")
        assert shelf.replace("doc", b"one", b"two")
        assert shelf.get("doc") == b"two"
        assert shelf.names() == ["doc"]  # the lock file is not a document

    def test_loses_on_changed_bytes_and_writes_nothing(self, shelf: Shelf) -> None:
        shelf.put("doc", b"one")
        shelf.put("doc", b"changed")
        assert not shelf.replace("doc", b"one", b"two")
        assert shelf.get("doc") == b"changed"

    def test_loses_on_a_missing_name_and_creates_nothing(self, shelf: Shelf) -> None:
        assert not shelf.replace("doc", b"one", b"two")
        assert shelf.get("doc") is None
        shelf.put("gone", b"one")
        shelf.remove("gone")
        assert not shelf.replace("gone", b"one", b"two")
        assert shelf.get("gone") is None and shelf.names() == []

    def test_of_many_threads_with_the_same_expectation_exactly_one_wins(self, shelf: Shelf) -> None:
        shelf.put("doc", b"start")
        barrier = threading.Barrier(8)
        wins: list[int] = []

        def swap(i: int) -> None:
            barrier.wait()
            if shelf.replace("doc", b"start", f"by {i}".encode()):
                wins.append(i)

        threads = [threading.Thread(target=swap, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 1
        assert shelf.get("doc") == f"by {wins[0]}".encode()


# -- start_batch ---------------------------------------------------------------------
def create_batch(folders: tuple[str, str], runs: Path) -> str:
    runs.mkdir()
    with BatchManager(folders[0], 2, folders[1]) as manager:
        return manager.create_custom_batch(
            [{"runs": str(runs), "job": f"{i:04d}"} for i in range(JOBS)], "clicked twice"
        )


def assert_created(batch_id: str, *managers: BatchManager) -> None:
    for manager in managers:
        status = manager.get_batch_status(batch_id)
        assert status is not None and status.state == "created"


def runs_per_job(runs: Path) -> Counter[str]:
    return Counter(name.split(".", 1)[0] for name in os.listdir(runs))


def assert_ran_once_and_completed(manager: BatchManager, batch_id: str, runs: Path) -> None:
    wait_until(
        lambda: (s := manager.get_batch_status(batch_id)) is not None and s.is_done,
        60,
        "the batch to finish",
    )
    # A manager that did not run it learns that it ended from the definition's final
    # counts, and each job's end from the job's record, through its cache: the two
    # arrive apart (milliseconds), so its list of the jobs may lack the last for a moment.
    wait_until(lambda: len(manager.get_batch_jobs(batch_id)) == JOBS, 60, "every job seen")
    jobs = manager.get_batch_jobs(batch_id)
    assert [j.status for j in jobs] == [BatchStatus.COMPLETED] * JOBS, [
        (j.id, j.status, j.error_message) for j in jobs
    ]
    assert runs_per_job(runs) == {f"{i:04d}": 1 for i in range(JOBS)}


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_of_several_processes_starting_one_batch_exactly_one_runs_it(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    gates = tmp_path / "gates"
    gates.mkdir()
    ready = [gates / f"ready-{i}" for i in range(STARTERS)]
    outs = [gates / f"out-{i}" for i in range(STARTERS)]
    batch_dir = "" if folders[0] == folders[1] else folders[0]  # "": the URL's default
    spawn = mp.get_context("spawn")
    children = [
        spawn.Process(
            target=start_batch_at_gate,
            args=(batch_dir, folders[1], batch_id, str(gates), i),
        )
        for i in range(STARTERS)
    ]
    for child in children:
        child.start()
    try:
        wait_until(lambda: all(r.exists() for r in ready), 90, "every starter to be ready")
        (gates / "go").touch()  # released together
        wait_until(lambda: all(o.exists() for o in outs), 90, "every starter's outcome")
    finally:
        for child in children:
            child.join(60)
    assert [c.exitcode for c in children] == [0] * STARTERS
    outcomes = [o.read_text().split(" ", 1) for o in outs]
    winners = [pid for pid, outcome in outcomes if outcome == "started"]
    assert len(winners) == 1, outcomes
    for _, outcome in outcomes:
        assert outcome == "started" or (
            outcome.startswith("refused: ") and "already started" in outcome
        ), outcome
    with BatchManager(folders[0], 2, folders[1]) as manager:
        assert_ran_once_and_completed(manager, batch_id, runs)
        # Only the winner wrote job records: no loser marked anything FAILED.
        owners = {j.owner for j in manager.get_batch_jobs(batch_id)}
        assert owners == {f"{HOST}:{winners[0]}"}


def start_together(starters: list[BatchManager], batch_id: str) -> list[str]:
    """Each manager's start_batch in its own thread, released by one barrier."""
    barrier = threading.Barrier(len(starters))
    outcomes: list[str] = []

    def start(manager: BatchManager) -> None:
        barrier.wait()
        try:
            manager.start_batch(batch_id, count_run)
            outcomes.append("started")
        except ValueError as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=start, args=(m,)) for m in starters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def assert_one_winner(outcomes: list[str], starters: int) -> None:
    assert len(outcomes) == starters
    assert outcomes.count("started") == 1, outcomes
    assert all("already started" in o for o in outcomes if o != "started"), outcomes


def test_of_threads_starting_one_batch_on_one_manager_exactly_one_runs_it(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    with BatchManager(folders[0], 2, folders[1]) as manager:
        assert_one_winner(start_together([manager] * STARTERS, batch_id), STARTERS)
        assert_ran_once_and_completed(manager, batch_id, runs)


def test_of_two_managers_in_one_process_exactly_one_runs_it(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    # Other options: two engines, each with its own queue, cache and shelf.
    with (
        BatchManager(folders[0], 2, folders[1]) as first,
        BatchManager(folders[0], 3, folders[1]) as second,
    ):
        assert first.queue is not second.queue
        assert_created(batch_id, first, second)  # each has read the batch unstarted
        assert_one_winner(start_together([first, second], batch_id), 2)
        assert_ran_once_and_completed(first, batch_id, runs)
        assert_ran_once_and_completed(second, batch_id, runs)
        for manager in (first, second):  # and both know it was started
            assert manager.batches[batch_id].started_at is not None


def test_a_manager_that_saw_the_batch_unstarted_learns_another_started_it(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    with (
        BatchManager(folders[0], 3, folders[1]) as watcher,
        BatchManager(folders[0], 2, folders[1]) as starter,
    ):
        assert_created(batch_id, watcher)
        starter.start_batch(batch_id, count_run)
        assert_ran_once_and_completed(starter, batch_id, runs)
        # The watcher's cached definition said "unstarted": the batch's records make
        # it read the definition again, instead of showing "created" for ever.
        wait_until(
            lambda: (
                (s := watcher.get_batch_status(batch_id)) is not None
                and (s.state, s.progress) == ("completed", 1.0)
            ),
            30,
            "the watcher to see the batch completed",
        )
        assert watcher.batches[batch_id].started_at is not None
        with pytest.raises(ValueError, match="already started"):
            watcher.start_batch(batch_id, count_run)


def test_retention_in_a_manager_that_saw_the_batch_unstarted_keeps_it_truthful(
    folders: tuple[str, str], shelf: Shelf, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    # The watcher trims the shared records down to 2; the batch has JOBS (6).
    with (
        BatchManager(folders[0], 3, folders[1], max_completed_jobs=2) as watcher,
        BatchManager(folders[0], 2, folders[1]) as starter,
    ):
        assert_created(batch_id, watcher)
        starter.start_batch(batch_id, count_run)

        def completed(manager: BatchManager) -> bool:
            s = manager.get_batch_status(batch_id)
            return (
                s is not None and s.state == "completed" and s.counts[BatchStatus.COMPLETED] == JOBS
            )

        wait_until(
            lambda: completed(starter) and watcher.queue.snapshot().summary(batch_id).is_done,
            60,
            "the batch done, in the watcher's cache too",
        )
        # The watcher's retention (its queue ran nothing: at maintenance) trims the
        # batch's records; it must save the final counts first, or nobody would. It
        # reads the definition it saw unstarted again at most once a second, and keeps
        # the records until then: a batch this quick may need a second pass.
        removed: list[str] = []

        def trimmed() -> bool:
            removed.extend(watcher.queue.maintain().removed)
            return len(removed) >= JOBS - 2

        wait_until(trimmed, 30, "the watcher's retention to trim the batch")
        assert len(removed) == JOBS - 2
        saved = shelf.get(batch_id)
        assert saved is not None
        final = BatchDefinition.from_json(saved).final
        assert final is not None and final.counts[BatchStatus.COMPLETED] == JOBS
        wait_until(lambda: completed(starter) and completed(watcher), 60, "both to still see it")
        assert runs_per_job(runs) == {f"{i:04d}": 1 for i in range(JOBS)}


@pytest.mark.slow
def test_final_counts_saved_by_two_managers_at_once_keep_the_first(
    folders: tuple[str, str], shelf: Shelf, tmp_path: Path
) -> None:
    """Two engines' retention hooks saving a finished batch's counts race: the one that
    comes second keeps what the first saved (a compare-and-swap, not a blind write)."""
    runs = tmp_path / "runs"
    batch_id = create_batch(folders, runs)
    with (
        BatchManager(folders[0], 2, folders[1]) as first,
        BatchManager(folders[0], 3, folders[1]) as second,
    ):
        first.start_batch(batch_id, count_run)
        assert_ran_once_and_completed(first, batch_id, runs)
        # The queue saved the real counts when it went idle; take them out again, so
        # that the two saves below race over a definition without counts.
        wait_until(lambda: b'"final"' in (shelf.get(batch_id) or b""), 30, "the idle save")
        settled = BatchDefinition.from_json(shelf.get(batch_id) or b"")
        shelf.put(batch_id, replace(settled, final=None).to_json())
        engines = [first._engine, second._engine]
        for engine in engines:
            engine.defs.lookup(batch_id)
        now = utc_now()
        finals = [
            FinalCounts({s: 0 for s in BatchStatus}, 1.0, "completed", now + timedelta(seconds=i))
            for i in range(2)
        ]
        barrier = threading.Barrier(2)
        kept: list[BatchDefinition | None] = [None, None]

        def settle(i: int) -> None:
            barrier.wait()
            kept[i] = engines[i].defs.change(batch_id, saving(finals[i]))

        threads = [threading.Thread(target=settle, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        saved = shelf.get(batch_id)
        assert saved is not None
        stored = BatchDefinition.from_json(saved)
        assert stored.final in finals and stored.started_at is not None
        # Both engines hold what is stored: the loser adopted the winner's counts.
        assert [k.final if k else None for k in kept] == [stored.final, stored.final]
        assert [e.defs.lookup(batch_id) for e in engines] == [stored, stored]
