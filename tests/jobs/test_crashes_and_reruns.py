"""The jobs layer under crashes, retention, reruns and other processes (issue 10).

Each test here failed before the fix it names. Real processes, real pools, real
folders and caches; the one injected fault (a clock that steps back) is passed
in as a parameter, as the API allows.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from statusbridge import (
    BatchJob,
    BatchManager,
    BatchQueue,
    BatchStatus,
    StatusCache,
    StatusStore,
    UnknownJobError,
)
from statusbridge.jobs._context import JobContext
from statusbridge.jobs._retention import retention_lag
from statusbridge.store.folder._atomic import write_atomic

from support.waiting import wait_until
from support.workers import (
    create_and_start_batch,
    double,
    exit_at_gate,
    wait_for_gate,
)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "batches", tmp_path / "batch_status"


def status_of(queue: BatchQueue, job_id: str) -> BatchStatus | None:
    job = queue.get_job_status(job_id)
    return job.status if job else None


def _running_jobs(manager: BatchManager, batch_id: str, count: int) -> bool:
    status = manager.get_batch_status(batch_id)
    return status is not None and status.counts[BatchStatus.RUNNING] == count


def wait_for_batch(manager: BatchManager, batch_id: str, timeout: float = 60) -> None:
    def done() -> bool:
        status = manager.get_batch_status(batch_id)
        return status is not None and status.is_done

    wait_until(done, timeout, f"batch {batch_id} to finish")


# -- 1 + 3: a worker process that dies ------------------------------------------
class TestDeadWorker:
    @pytest.mark.timeout(120)
    @pytest.mark.slow
    def test_crash_fails_only_the_jobs_running_in_the_dead_pool(self, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        with BatchQueue(2, status_dir=tmp_path / "s", executor="process") as queue:
            dying = queue.submit(exit_at_gate, {"gate": str(gate), "code": 3})
            bystander = queue.submit(wait_for_gate, {"gate": str(tmp_path / "never")})
            later = [queue.submit(double, {"x": i}) for i in range(4)]  # queued, not started
            wait_until(
                lambda: (
                    status_of(queue, dying) is BatchStatus.RUNNING
                    and status_of(queue, bystander) is BatchStatus.RUNNING
                ),
                60,
                "both workers to run their jobs",
            )
            gate.touch()
            assert queue.wait([dying, bystander, *later], timeout=90)
            died = queue.get_job_status(dying)
            assert died is not None and died.status is BatchStatus.FAILED
            assert died.error_message == "worker process died (exit code 3)"
            # The pool kills its other workers when one dies: that job ran in it. It
            # reads its own worker's end, whichever of the two failed jobs was handled
            # first (the second once read "exit code unknown; its pool cannot be
            # replaced": the first had taken the exit codes and replaced the pool).
            stopped = queue.get_job_status(bystander)
            assert stopped is not None and stopped.status is BatchStatus.FAILED
            assert stopped.error_message == "worker process died (killed by signal SIGTERM)"
            # Jobs the dead pool had not started run on the new pool.
            for job_id in later:
                job = queue.get_job_status(job_id)
                assert job is not None and job.status is BatchStatus.COMPLETED, job

    @pytest.mark.timeout(120)
    @pytest.mark.slow
    def test_submitting_while_a_worker_dies_does_not_deadlock(self, tmp_path: Path) -> None:
        """On 3.12/3.13 this hung: submit held the queue lock around executor.submit
        while the done-callback (run under the pool's lock) took the queue lock."""
        gate = tmp_path / "gate"
        with BatchQueue(2, status_dir=tmp_path / "s", executor="process") as queue:
            dying = queue.submit(exit_at_gate, {"gate": str(gate), "code": 7})
            wait_until(lambda: status_of(queue, dying) is BatchStatus.RUNNING, 60)
            submitted: list[str] = []
            errors: list[BaseException] = []

            def keep_submitting() -> None:
                try:
                    for i in range(40):
                        submitted.append(queue.submit(double, {"x": i}))
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=keep_submitting)
            thread.start()
            gate.touch()
            thread.join(60)
            assert not thread.is_alive(), "submit() hung while the pool broke"
            assert not errors
            assert queue.wait([dying, *submitted], timeout=90)
            assert status_of(queue, dying) is BatchStatus.FAILED
            # Every job submitted around the crash either ran or failed saying why:
            # only those running in the dead pool (its 2 workers) may fail.
            jobs = [queue.get_job_status(j) for j in submitted]
            failed = [j for j in jobs if j is None or j.status is not BatchStatus.COMPLETED]
            assert len(failed) <= 1, failed
            for job in failed:
                assert job is not None and (job.error_message or "").startswith(
                    "worker process died"
                ), job


# -- 2 + 12: retention keeps batches true ------------------------------------------
class TestRetention:
    def test_batch_larger_than_max_completed_jobs_finishes(
        self, folders: tuple[Path, Path]
    ) -> None:
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 2, status_dir, max_completed_jobs=5) as manager:
            batch_id = manager.create_custom_batch([{"x": i} for i in range(12)], "big")
            manager.start_batch(batch_id, double)
            wait_for_batch(manager, batch_id)
            # Retention trims the records once the final counts are saved...
            wait_until(
                lambda: len([n for n in os.listdir(status_dir) if n.endswith(".json")]) <= 5,
                30,
                "retention to trim the records",
            )
            status = manager.get_batch_status(batch_id)
            assert status is not None
            assert (status.total, status.counts[BatchStatus.COMPLETED]) == (12, 12)
            assert status.state == "completed" and status.progress == 1.0
        # ... and a manager started later still tells the truth.
        with BatchManager(batch_dir, 2, status_dir, max_completed_jobs=5) as again:
            status = again.get_batch_status(batch_id)
            assert status is not None and status.is_done
            assert status.counts[BatchStatus.COMPLETED] == 12

    def test_a_finished_batch_survives_a_cleanup_that_does_not_know_batches(
        self, folders: tuple[Path, Path]
    ) -> None:
        """Final counts were saved only by a retention pass: with no age limit and a batch
        under the count limit there was none, and once ``statusbridge cleanup`` removed
        the batch's records every manager counted its jobs as pending for ever."""
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 2, status_dir, retention_hours=None) as manager:
            batch_id = manager.create_custom_batch([{"x": i} for i in range(3)], "small")
            manager.start_batch(batch_id, double)
            wait_for_batch(manager, batch_id)
            # Saved when the queue went idle: no retention was needed.
            path = batch_dir / f"{batch_id}.json"
            wait_until(lambda: "final" in json.loads(path.read_bytes()), 30, "the final counts")
        assert StatusStore(status_dir).cleanup(max_age_hours=0) == 3
        with BatchManager(batch_dir, 2, status_dir) as again:
            status = again.get_batch_status(batch_id)
            assert status is not None and status.state == "completed"
            assert (status.total, status.counts[BatchStatus.COMPLETED]) == (3, 3)

    def test_a_batch_that_ended_with_no_manager_watching_is_saved_at_the_next_start(
        self, folders: tuple[Path, Path]
    ) -> None:
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 2, status_dir) as manager:
            batch_id = manager.create_custom_batch([{"x": 1}, {"x": 2}], "older")
            manager.start_batch(batch_id, double)
            wait_for_batch(manager, batch_id)
        # As a manager of an older version (or one killed before its queue went idle)
        # leaves it: started, its records all finished, no final counts.
        path = batch_dir / f"{batch_id}.json"
        doc = json.loads(path.read_bytes())
        doc.pop("final", None)
        write_atomic(path, json.dumps(doc).encode())
        with BatchManager(batch_dir, 2, status_dir):
            assert "final" in json.loads(path.read_bytes())
        assert StatusStore(status_dir).cleanup(max_age_hours=0) == 2
        with BatchManager(batch_dir, 2, status_dir) as later:
            status = later.get_batch_status(batch_id)
            assert status is not None and status.state == "completed"

    def test_open_batch_records_are_never_trimmed(self, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        with BatchQueue(2, max_completed_jobs=2, status_dir=tmp_path / "s") as queue:
            slow = queue.submit(wait_for_gate, {"gate": str(gate)}, batch_id="b")
            fast = [queue.submit(double, {"x": i}, batch_id="b") for i in range(6)]
            assert queue.wait(fast, timeout=60)
            queue.maintain()
            # The batch still runs: all of its finished records stay.
            assert all(queue.store.read(j) is not None for j in fast)
            gate.touch()
            assert queue.wait([slow], timeout=60)
            wait_until(
                lambda: len([j for j in [slow, *fast] if queue.store.read(j)]) <= 2,
                30,
                "retention after the batch finished",
            )

    @pytest.mark.slow
    def test_wait_returns_when_retention_removed_the_records(self, tmp_path: Path) -> None:
        """A job whose record retention removed must not look pending to wait()."""
        with BatchQueue(2, max_completed_jobs=10, status_dir=tmp_path / "s") as queue:
            ids = [queue.submit(double, {"x": i}) for i in range(600)]
            assert queue.wait(ids, timeout=90)
            jobs = [queue.get_job_status(i) for i in ids]
            assert all(job is None or job.is_finished for job in jobs)
            wait_until(
                lambda: sum(queue.get_job_status(i) is None for i in ids) >= 590,
                30,
                "retention to leave 10 records",
            )

    def test_a_record_rewritten_after_the_cache_read_it_survives(self, tmp_path: Path) -> None:
        """Retention removes by the version the cache saw: a newer record is never removed."""
        folder = tmp_path / "s"
        writer = StatusStore(folder)
        for name in ("restarted", "old"):
            writer.update(name, status="completed")
        # Polls once an hour: after its first scan this cache sees nothing more, so
        # the queue decides on a record that has changed since.
        cache = StatusCache(folder, polling=True, poll_interval=3600)
        with (
            cache,
            BatchQueue(
                max_completed_jobs=2,
                status_dir=folder,
                cache=cache,
                retention_hours=None,
                maintenance_interval=3600,
            ) as queue,
        ):
            writer.update("restarted", status="pending")  # a new run of the same id
            queue.max_completed_jobs = 0
            assert queue.maintain().removed == ("old",)
            current = writer.read("restarted")
            assert current is not None and current.status is BatchStatus.PENDING

    def test_retention_never_waits_for_a_subscriber_that_waits_for_it(self, tmp_path: Path) -> None:
        """The cache's versions are asked for under its apply lock, which subscribers hold:
        one waiting for retention to finish must not deadlock it (it falls back to reading)."""
        folder = tmp_path / "s"
        writer = StatusStore(folder)
        writer.update("old", status="completed")
        with BatchQueue(
            max_completed_jobs=1, status_dir=folder, retention_hours=None, maintenance_interval=3600
        ) as queue:
            inside, done, left = threading.Event(), threading.Event(), threading.Event()

            def blocker(snap: object, changed: frozenset[str]) -> None:
                if "trigger" in changed:
                    inside.set()
                    done.wait(30)
                    left.set()

            unsubscribe = queue.cache.subscribe(blocker)
            writer.update("trigger", status="completed")
            assert inside.wait(10)
            try:
                queue.max_completed_jobs = 0
                assert sorted(queue.maintain().removed) == ["old", "trigger"]
                assert not left.is_set()  # retention went on while the subscriber waited
            finally:
                done.set()
                unsubscribe()
            assert writer.scan() == {}

    @pytest.mark.slow
    def test_retention_lags_by_at_most_one_group_while_jobs_run(self, tmp_path: Path) -> None:
        folder, gate, limit = tmp_path / "s", tmp_path / "gate", 20
        lag = retention_lag(limit)
        assert (retention_lag(9), lag, retention_lag(1000), retention_lag(10**6)) == (0, 2, 64, 64)

        def finished_records() -> int:
            jobs = StatusStore(folder).scan().values()
            return sum(job.is_finished for job in jobs)

        # No maintenance pass within the test: the burst of finished jobs itself must
        # trim (its records reach the cache after the jobs are done here; retention
        # used to give up on records not in the cache yet and wait for maintenance).
        queue = BatchQueue(
            2, max_completed_jobs=limit, status_dir=folder, maintenance_interval=3600
        )
        with queue:
            slow = queue.submit(wait_for_gate, {"gate": str(gate)})
            fast = [queue.submit(double, {"x": i}) for i in range(50)]
            assert queue.wait(fast, timeout=60)
            # (Before, only the cache's 30 s reconcile happened to set it off.)
            wait_until(lambda: finished_records() <= limit + lag, 15, "retention while busy")
            gate.touch()
            assert queue.wait([slow], timeout=30)
            # Idle: down to the limit itself.
            wait_until(lambda: finished_records() <= limit, 30, "retention once idle")

    def test_trimming_survives_the_clock_stepping_back(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
        times = [now, now - timedelta(hours=1)]  # one clock reading per update
        writer = StatusStore(folder, clock=lambda: times.pop(0))
        with BatchQueue(max_completed_jobs=1, status_dir=folder, retention_hours=None) as queue:
            writer.update("first", status="completed")
            wait_until(lambda: queue.get_job_status("first"), 10, "the cache to see 'first'")
            # The wall clock steps back an hour; then another job finishes.
            writer.update("second", status="completed")
            wait_until(lambda: queue.get_job_status("second"), 10, "the cache to see 'second'")
            report = queue.maintain(now=now)
            assert report.removed == ("first",)
            assert queue.store.read("second") is not None


# -- 4 + 5 + 11: batch definitions ------------------------------------------------
class TestDefinitions:
    def test_rejected_start_leaves_the_batch_unstarted(self, folders: tuple[Path, Path]) -> None:
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 1, status_dir, executor="process") as manager:
            batch_id = manager.create_custom_batch([{"x": 1}], "lambda")
            with pytest.raises(TypeError, match="module level"):
                manager.start_batch(batch_id, lambda p: p)
            status = manager.get_batch_status(batch_id)
            assert status is not None and status.state == "created"
            assert json.loads((batch_dir / f"{batch_id}.json").read_text())["started_at"] is None
            manager.start_batch(batch_id, double)  # a retry works
            wait_for_batch(manager, batch_id)

    @pytest.mark.slow
    def test_batch_ids_are_unique_and_never_overwrite(self, folders: tuple[Path, Path]) -> None:
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 1, status_dir) as manager:
            ids = [manager.create_custom_batch([], f"b{i}") for i in range(3000)]
        assert len(set(ids)) == 3000
        assert len(os.listdir(batch_dir)) == 3000
        random_part = ids[0].rsplit("-", 1)[1]
        assert len(random_part) == 16  # 64 random bits
        # Creating a batch is an exclusive create: an existing file is never replaced.
        existing = batch_dir / f"{ids[0]}.json"
        before = existing.read_bytes()
        with pytest.raises(FileExistsError):
            write_atomic(existing, b"{}", exclusive=True)
        assert existing.read_bytes() == before
        assert not [n for n in os.listdir(batch_dir) if n.startswith(".")]

    def test_batch_file_without_utc_offset_is_skipped_with_a_reason(
        self, folders: tuple[Path, Path], caplog: pytest.LogCaptureFixture
    ) -> None:
        batch_dir, status_dir = folders
        batch_dir.mkdir()
        naive = {
            "schema": 1,
            "id": "batch-naive",
            "name": "naive",
            "created_at": "2026-11-29T12:00:00",
            "started_at": None,
            "jobs": [],
        }
        (batch_dir / "batch-naive.json").write_text(json.dumps(naive))
        good = dict(naive, id="batch-good", created_at="2026-11-29T12:00:00+00:00")
        (batch_dir / "batch-good.json").write_text(json.dumps(good))
        with caplog.at_level(logging.WARNING), BatchManager(batch_dir, 1, status_dir) as manager:
            assert [b.id for b in manager.list_batches()] == ["batch-good"]
        assert "batch-naive.json" in caplog.text and "no UTC offset" in caplog.text


# -- 10: managers in two processes ------------------------------------------------
@pytest.mark.timeout(120)
def test_a_running_manager_sees_batches_another_process_creates(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    batch_dir, status_dir = folders
    out = tmp_path / "batch-id"
    with BatchManager(batch_dir, 1, status_dir) as manager:
        other = mp.get_context("spawn").Process(
            target=create_and_start_batch,
            args=(str(batch_dir), str(status_dir), str(out)),
        )
        other.start()
        try:
            wait_until(out.exists, 60, "the other process to start its batch")
            batch_id = out.read_text()
            status = manager.get_batch_status(batch_id)
            assert status is not None and status.name == "from another process"
            assert batch_id in [b.id for b in manager.list_batches()]
            wait_until(
                lambda: any(
                    j.status is BatchStatus.RUNNING for j in manager.get_batch_jobs(batch_id)
                ),
                60,
                "its jobs to run",
            )
            assert manager.cancel_batch(batch_id) == 2
        finally:
            other.join(60)
        assert other.exitcode == 0
        wait_for_batch(manager, batch_id)
        final = manager.get_batch_status(batch_id)
        assert final is not None and final.counts[BatchStatus.CANCELLED] == 2


# -- 6 + 7 + 8: ownership ---------------------------------------------------------
def _process_resources() -> tuple[int, int, int]:
    """Threads, open descriptors and inotify instances of this process."""
    fds = os.listdir("/proc/self/fd")
    inotify = 0
    for fd in fds:
        try:
            inotify += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return threading.active_count(), len(fds), inotify


def _back_to(baseline: tuple[int, int, int]) -> Callable[[], bool]:
    def check() -> bool:
        gc.collect()
        now = _process_resources()
        return all(n <= b for n, b in zip(now, baseline, strict=True))

    return check


@pytest.fixture
def baseline() -> tuple[int, int, int]:
    gc.collect()
    return _process_resources()


class TestOwnership:
    @pytest.mark.slow
    def test_shutdown_releases_everything(
        self, tmp_path: Path, baseline: tuple[int, int, int]
    ) -> None:
        queue = BatchQueue(2, status_dir=tmp_path / "s")
        assert queue.wait([queue.submit(double, {"x": 1})], timeout=30)
        queue.shutdown(wait=True)
        queue.shutdown(wait=True)  # twice is fine
        wait_until(_back_to(baseline), 10, f"resources back to {baseline}")

    @pytest.mark.slow
    def test_shutdown_without_wait_releases_once_jobs_are_done(
        self, tmp_path: Path, baseline: tuple[int, int, int]
    ) -> None:
        gate = tmp_path / "gate"
        queue = BatchQueue(1, status_dir=tmp_path / "s")
        job_id = queue.submit(wait_for_gate, {"gate": str(gate)})
        wait_until(lambda q=queue: status_of(q, job_id) is BatchStatus.RUNNING, 30)  # type: ignore[misc]
        queue.shutdown(wait=False)
        with pytest.raises(RuntimeError, match="shut down"):
            queue.submit(double, {"x": 1})
        gate.touch()
        queue.shutdown(wait=True)  # a second call waits for what still runs
        job = queue.store.read(job_id)
        assert job is not None and job.status is BatchStatus.COMPLETED
        del queue
        wait_until(_back_to(baseline), 10, f"resources back to {baseline}")

    @pytest.mark.slow
    def test_dropped_queues_and_managers_release_everything(
        self, folders: tuple[Path, Path], baseline: tuple[int, int, int]
    ) -> None:
        batch_dir, status_dir = folders
        for i in range(100):
            queue = BatchQueue(1, status_dir=status_dir)
            queue.submit(double, {"x": i})
            manager = BatchManager(batch_dir, 1, status_dir, executor="thread", retention_hours=i)
            del queue, manager
        wait_until(_back_to(baseline), 60, f"resources back to {baseline}")

    @pytest.mark.slow
    def test_a_manager_built_on_every_rerun_reuses_one_engine(
        self, folders: tuple[Path, Path], tmp_path: Path, baseline: tuple[int, int, int]
    ) -> None:
        """The seed's Streamlit usage: ``manager = BatchManager(...)`` at the top of a script."""
        batch_dir, status_dir = folders
        gate = tmp_path / "gate"
        manager = BatchManager(batch_dir, 2, status_dir)
        batch_id = manager.create_custom_batch([{"gate": str(gate)}] * 3, "rerun")
        manager.start_batch(batch_id, wait_for_gate)
        first_queue = manager.queue
        # Its jobs are fed in the background: measure once both workers run one.
        wait_until(partial(_running_jobs, manager, batch_id, 2), 60, "two jobs to run")
        running = _process_resources()
        for _ in range(100):  # 100 reruns while the batch runs
            manager = BatchManager(batch_dir, 2, status_dir)
            assert manager.queue is first_queue
            assert manager.get_batch_status(batch_id) is not None
        gc.collect()
        assert _process_resources()[0] <= running[0] + 1  # threads
        assert _process_resources()[2] == running[2]  # inotify instances
        gate.touch()
        wait_for_batch(manager, batch_id)
        del manager, first_queue
        wait_until(_back_to(baseline), 30, f"resources back to {baseline}")

    def test_read_your_writes_entries_do_not_pile_up(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        # A cache that polls too rarely to catch up on its own: rescan() catches it up.
        with (
            StatusCache(folder, polling=True, poll_interval=3600) as cache,
            BatchQueue(2, status_dir=folder, cache=cache) as queue,
        ):
            ids = [queue.submit(double, {"x": i}) for i in range(200)]

            def all_finished() -> bool:
                jobs = queue.store.scan()
                return all((j := jobs.get(i)) is not None and j.is_finished for i in ids)

            wait_until(all_finished, 60, "every job to finish")
            cache.rescan()
            queue.maintain()
            queue.maintain()
            assert len(queue._overlay) == 0  # private: the bound is what is tested


# -- 9: late progress and heartbeats ----------------------------------------------
def test_late_progress_never_changes_a_finished_record(tmp_path: Path) -> None:
    store = StatusStore(tmp_path / "s")
    store.update("j", status="running", progress=0.1)
    ctx = JobContext(store, "j", interval=0.0)
    ctx.record(0.6, "late", {})
    finished = store.update("j", status="completed", progress=1.0)  # e.g. another process
    ctx.flush()  # the heartbeat thread, a moment too late
    after = store.read("j")
    assert after == finished
    assert isinstance(after, BatchJob) and after.progress == 1.0


# -- 13 ---------------------------------------------------------------------------
def test_wait_on_an_unknown_job_raises(tmp_path: Path) -> None:
    with BatchQueue(status_dir=tmp_path / "s") as queue:
        with pytest.raises(UnknownJobError, match="unknown"):
            queue.wait(["unknown"], timeout=1)
        done = queue.submit(double, {"x": 1})
        assert queue.wait([done], timeout=30)


@pytest.mark.slow
def test_the_seed_streamlit_script_rerun_many_times_does_not_leak(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """The seed's own page: ``manager = BatchManager(...)`` at the top, under real reruns."""
    testing = pytest.importorskip("streamlit.testing.v1", reason="the demo extra is not installed")
    batch_dir, status_dir = folders
    gate = tmp_path / "gate"
    script = f"""
import streamlit as st
from support.workers import wait_for_gate
from statusbridge import BatchManager

manager = BatchManager({str(batch_dir)!r}, 2, {str(status_dir)!r})
if "batch" not in st.session_state:
    st.session_state.batch = manager.create_custom_batch([{{"gate": {str(gate)!r}}}] * 2, "seed")
    manager.start_batch(st.session_state.batch, wait_for_gate)
st.write(str(manager.get_batch_status(st.session_state.batch)))
"""
    at = testing.AppTest.from_string(script, default_timeout=30)
    at.run()
    assert not at.exception
    after_first = _process_resources()
    for _ in range(50):
        at.run()
        assert not at.exception
    gc.collect()
    threads, _fds, inotify = _process_resources()
    assert threads <= after_first[0] + 2  # AppTest's own script thread may linger
    assert inotify == after_first[2]
    gate.touch()
    wait_until(lambda: "completed" in at.run().markdown[0].value, 60, "the batch to complete")
    # Streamlit keeps the last run's module (and so its manager) until the
    # session ends; what matters is that reruns never added anything.
    gc.collect()
    assert _process_resources()[2] == after_first[2]
