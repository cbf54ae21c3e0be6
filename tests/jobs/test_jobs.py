"""Layer 4: BatchQueue / BatchManager with real threads and processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from statusbridge import (
    BatchJob,
    BatchManager,
    BatchQueue,
    BatchStatus,
    StatusStore,
    UnknownJobError,
    is_cancelled,
    report_progress,
)
from statusbridge.jobs._liveness import HOST, this_process

from support.waiting import wait_until
from support.workers import (
    bad_progress,
    double,
    many_reports,
    queue_then_die,
    unstorable_result,
    until_cancelled,
    wait_for_gate,
)

EXECUTORS = ["thread", pytest.param("process", marks=pytest.mark.slow)]  # a process pool is slow


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "batches", tmp_path / "batch_status"


@pytest.fixture(params=EXECUTORS)
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BatchQueue]:
    q = BatchQueue(2, status_dir=tmp_path / "status", executor=request.param)
    yield q
    q.shutdown(wait=True, cancel_pending=True)


def status_of(queue: BatchQueue, job_id: str) -> BatchStatus | None:
    job = queue.get_job_status(job_id)
    return job.status if job else None


class TestSeedFlow:
    @pytest.mark.parametrize("executor", EXECUTORS)
    def test_create_start_wait_results(self, folders: tuple[Path, Path], executor: str) -> None:
        batch_dir, status_dir = folders
        manager = BatchManager(batch_dir, 2, status_dir, executor=executor)  # type: ignore[arg-type]
        jobs = [{"x": i} for i in range(5)] + [{"x": 0, "fail": True}]
        batch_id = manager.create_custom_batch(jobs, "Test")
        before = manager.get_batch_status(batch_id)
        assert before is not None
        assert (before.state, before.total, before.name) == ("created", 6, "Test")
        manager.start_batch(batch_id, double)
        wait_until(lambda: manager.get_batch_status(batch_id).is_done, 60, "batch done")  # type: ignore[union-attr]
        status = manager.get_batch_status(batch_id)
        assert status is not None
        assert status.counts[BatchStatus.COMPLETED] == 5
        assert status.counts[BatchStatus.FAILED] == 1
        assert (status.state, status.progress) == ("failed", 1.0)
        results = sorted(
            manager.get_job_status(f"{batch_id}-{i:04d}").result["value"]  # type: ignore[union-attr]
            for i in range(5)
        )
        assert results == [0, 2, 4, 6, 8]
        failed = manager.get_job_status(f"{batch_id}-0005")
        assert failed is not None
        assert failed.error_message == "RuntimeError: boom"
        assert "Traceback" in failed.meta["traceback"]
        ok = manager.get_job_status(f"{batch_id}-0000")
        assert ok is not None and ok.owner is not None and ok.started_at and ok.completed_at
        if executor == "process":
            assert ok.owner != f"{HOST}:{os.getpid()}"  # written by the worker process itself
        with pytest.raises(ValueError, match="already started"):
            manager.start_batch(batch_id, double)
        manager.shutdown()

    def test_history_survives_restart(self, folders: tuple[Path, Path]) -> None:
        batch_dir, status_dir = folders
        with BatchManager(batch_dir, 2, status_dir) as first:
            batch_id = first.create_custom_batch([{"x": 1}, {"x": 2}], "Before restart")
            first.start_batch(batch_id, double)
            assert first.queue.wait(timeout=30)
        with BatchManager(batch_dir, 2, status_dir) as second:
            summaries = second.list_batches()
            assert [s.id for s in summaries] == [batch_id]
            assert summaries[0].name == "Before restart"
            assert summaries[0].state == "completed"
            job = second.get_job_status(f"{batch_id}-0001")
            assert job is not None and job.result == {"value": 4}

    def test_unknown_batch(self, folders: tuple[Path, Path]) -> None:
        with BatchManager(*folders[:1], 2, folders[1]) as manager:
            assert manager.get_batch_status("nope") is None
            with pytest.raises(UnknownJobError, match="unknown batch id 'nope'"):
                manager.start_batch("nope", double)
            with pytest.raises(UnknownJobError):
                manager.cancel_batch("nope")
            with pytest.raises(ValueError, match="non-empty name"):
                manager.create_custom_batch([], " ")


class TestProgress:
    def test_progress_seen_through_the_cache(self, queue: BatchQueue, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        job_id = queue.submit(wait_for_gate, {"gate": str(gate)})
        job = wait_until(
            lambda: (j := queue.get_job_status(job_id)) and j.progress == 0.5 and j, 60, "progress"
        )
        assert job.status is BatchStatus.RUNNING
        assert job.message == "waiting at the gate"
        assert job.meta["pid"] > 0
        gate.touch()
        assert queue.wait([job_id], timeout=60)
        done = queue.get_job_status(job_id)
        assert done is not None
        assert (done.status, done.progress, done.result) == (BatchStatus.COMPLETED, 1.0, "passed")

    def test_throttled_and_last_state_written(self, tmp_path: Path) -> None:
        # An interval (and heartbeat) far longer than any run of this test: however fast
        # or slow the machine, no second progress write is ever due within a job.
        with BatchQueue(
            status_dir=tmp_path / "s", progress_interval=3600, heartbeat_interval=3600
        ) as queue:
            one = queue.submit(many_reports, {"n": 1})
            many = queue.submit(many_reports, {"n": 20_000})
            assert queue.wait([one, many], timeout=60)
            single, job = queue.get_job_status(one), queue.get_job_status(many)
            assert single is not None and job is not None
            assert job.result == 20_000
            assert job.message == "20000/20000"  # the last report is never lost
            assert job.progress == 1.0
            # 20,000 reports cost exactly as many writes as one report (seq counts writes).
            assert job.seq == single.seq

    def test_outside_a_job_they_are_no_ops(self, tmp_path: Path) -> None:
        report_progress(0.5, "nobody listens", key=1)
        assert is_cancelled() is False
        assert os.listdir(tmp_path) == []


class TestCancel:
    def test_cancel_pending_never_starts(self, queue: BatchQueue, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        blockers = [queue.submit(wait_for_gate, {"gate": str(gate)}) for _ in range(2)]
        wait_until(lambda: all(status_of(queue, b) is BatchStatus.RUNNING for b in blockers), 60)
        pending = queue.submit(wait_for_gate, {"gate": str(gate)})
        assert queue.cancel(pending) is True
        job = queue.store.read(pending)
        assert job is not None and job.status is BatchStatus.CANCELLED  # at once, on disk
        gate.touch()
        assert queue.wait([*blockers, pending], timeout=60)
        final = queue.get_job_status(pending)
        assert final is not None
        assert final.status is BatchStatus.CANCELLED
        assert final.started_at is None
        assert queue.cancel(pending) is False

    def test_cancel_running(self, queue: BatchQueue) -> None:
        job_id = queue.submit(until_cancelled)
        # Its first report is written: the job function is running, inside its loop.
        wait_until(lambda: (j := queue.get_job_status(job_id)) and "pid" in j.meta, 60, "loop")
        assert queue.cancel(job_id) is True
        assert queue.wait([job_id], timeout=60)
        job = queue.get_job_status(job_id)
        assert job is not None
        assert job.status is BatchStatus.CANCELLED
        assert job.result is None and job.progress != 1.0  # stopped, did not run to its end
        # Whether is_cancelled() or report_progress noticed first is a race (see
        # until_cancelled); what is guaranteed is that is_cancelled() is true once it has.
        assert job.meta["cancelled_inside"] is True
        assert job.message in ("looping", "saw the cancel")
        assert queue.cancel(job_id) is False

    @pytest.mark.slow
    def test_cancel_from_another_process_object(self, tmp_path: Path) -> None:
        """The request travels in the file: a second queue (another app) cancels it."""
        folder = tmp_path / "s"
        with BatchQueue(status_dir=folder, executor="process") as owner:
            job_id = owner.submit(until_cancelled)
            wait_until(lambda: status_of(owner, job_id) is BatchStatus.RUNNING, 60)
            with BatchQueue(status_dir=folder) as other:
                assert other.cancel(job_id) is True
            assert owner.wait([job_id], timeout=60)
            assert status_of(owner, job_id) is BatchStatus.CANCELLED

    def test_cancel_batch_and_unknown(self, folders: tuple[Path, Path], tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        with BatchManager(folders[0], 1, folders[1]) as manager:
            batch_id = manager.create_custom_batch([{"gate": str(gate)}] * 4, "Cancel me")
            manager.start_batch(batch_id, wait_for_gate)
            assert manager.cancel_batch(batch_id) == 4
            gate.touch()
            wait_until(lambda: manager.get_batch_status(batch_id).is_done, 60)  # type: ignore[union-attr]
            assert manager.get_batch_status(batch_id).state == "cancelled"  # type: ignore[union-attr]
            assert manager.queue.cancel("no-such-job") is False


class TestCrashes:
    @pytest.mark.slow
    def test_killed_application_is_detected(self, tmp_path: Path) -> None:
        folder, gate, ready = tmp_path / "s", tmp_path / "gate", tmp_path / "ready"
        proc = mp.get_context("spawn").Process(
            target=queue_then_die, args=(str(folder), str(gate), str(ready))
        )
        proc.start()
        wait_until(ready.exists, 60, "the application to run its job")
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        # A new queue on the folder checks at start.
        with BatchQueue(status_dir=folder) as queue:
            running = queue.store.read("running-one")
            pending = queue.store.read("pending-one")
            assert running is not None and pending is not None
            assert running.status is BatchStatus.FAILED
            assert running.error_message is not None
            assert running.error_message.startswith("worker died: process")
            assert pending.status is BatchStatus.FAILED
            assert "abandoned" in (pending.error_message or "")

    @pytest.mark.slow
    def test_killed_worker_process_fails_its_job(self, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        with BatchQueue(1, status_dir=tmp_path / "s", executor="process") as queue:
            job_id = queue.submit(wait_for_gate, {"gate": str(gate)})
            job = wait_until(
                lambda: (j := queue.get_job_status(job_id)) and "pid" in j.meta and j, 60
            )
            os.kill(job.meta["pid"], signal.SIGKILL)
            assert queue.wait([job_id], timeout=60)
            failed = queue.get_job_status(job_id)
            assert failed is not None and failed.status is BatchStatus.FAILED
            assert failed.error_message == "worker process died (killed by signal SIGKILL)"
            # The queue replaces its broken pool: later jobs still run.
            again = queue.submit(double, {"x": 5})
            assert queue.wait([again], timeout=60)
            assert queue.get_job_status(again).result == {"value": 10}  # type: ignore[union-attr]

    def test_heartbeat_expiry_on_other_hosts(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        store = StatusStore(folder)
        with BatchQueue(status_dir=folder, heartbeat_timeout=60) as queue:
            beat = queue._clock()
            store.update("remote", status="running", owner="other-host:4242", heartbeat_at=beat)
            wait_until(lambda: "remote" in queue.snapshot())
            assert queue.maintain(now=beat + timedelta(seconds=30)).died == ()
            report = queue.maintain(now=beat + timedelta(seconds=61))
            assert report.died == ("remote",)
            job = store.read("remote")
            assert job is not None and job.status is BatchStatus.FAILED
            assert "no heartbeat from other-host:4242" in (job.error_message or "")

    def test_reused_pid_is_not_alive(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        store = StatusStore(folder)
        # Our own pid on this machine, but a start an hour earlier: the pid was reused.
        me = this_process()
        assert me.start is not None
        reused = {**me.fields(), "owner_start": me.start - 3_600_000}
        store.update("ghost", status="running", **reused)
        with BatchQueue(status_dir=folder) as queue:
            job = queue.store.read("ghost")
            assert job is not None and job.status is BatchStatus.FAILED


class TestRetention:
    @pytest.mark.slow
    def test_max_completed_jobs_bounds_disk_and_cache(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        with BatchQueue(2, max_completed_jobs=5, status_dir=folder) as queue:
            ids = [queue.submit(double, {"x": i}) for i in range(12)]
            assert queue.wait(ids, timeout=60)

            def bounded() -> bool:
                on_disk = [n for n in os.listdir(folder) if n.endswith(".json")]
                return len(on_disk) <= 5 and len(queue.snapshot()) <= 5

            wait_until(bounded, 30, "retention to apply")

    def test_old_finished_records_and_batches_removed(self, folders: tuple[Path, Path]) -> None:
        with BatchManager(*folders[:1], 2, folders[1]) as manager:
            batch_id = manager.create_custom_batch([{"x": 1}], "Old")
            manager.start_batch(batch_id, double)
            assert manager.queue.wait(timeout=30)
            # wait() knows the job ended (from its worker); retention acts on what the
            # cache shows, which follows a moment later.
            job_id = f"{batch_id}-0000"
            wait_until(
                lambda: (job := manager.queue.snapshot().get(job_id)) and job.is_finished,
                30,
                "the cache to show the job finished",
            )
            later = manager.queue._clock() + timedelta(hours=25)
            report = manager.queue.maintain(now=later)
            assert report.removed == (job_id,)
            assert manager.remove_old_batches(now=later) == [batch_id]
            # Only the definition goes; the shelf's lock file (hidden, bounded) stays.
            assert [n for n in os.listdir(folders[0]) if not n.startswith(".lock-")] == []

    @pytest.mark.slow
    def test_running_and_pending_never_removed(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        with BatchQueue(1, max_completed_jobs=0, status_dir=folder) as queue:
            gate = tmp_path / "gate"
            a = queue.submit(wait_for_gate, {"gate": str(gate)})
            b = queue.submit(wait_for_gate, {"gate": str(gate)})
            wait_until(lambda: status_of(queue, a) is BatchStatus.RUNNING, 30)
            wait_until(lambda: {a, b} <= set(queue.snapshot()), 30, "cache to see both")
            try:
                report = queue.maintain(now=queue._clock() + timedelta(days=30))
                assert report.removed == ()
                assert {a, b} <= set(queue.snapshot())
            finally:
                gate.touch()
            assert queue.wait([a, b], timeout=30)


class TestBadInput:
    def test_unpicklable_function_for_processes(self, tmp_path: Path) -> None:
        with BatchQueue(status_dir=tmp_path / "s", executor="process") as queue:
            with pytest.raises(TypeError, match="cannot send .* to a worker process"):
                queue.submit(lambda p: p)
            assert len(queue.snapshot()) == 0
            assert [n for n in os.listdir(tmp_path / "s") if n.endswith(".json")] == []

    def test_progress_out_of_range_fails_the_job(self, queue: BatchQueue) -> None:
        job_id = queue.submit(bad_progress)
        assert queue.wait([job_id], timeout=60)
        job = queue.get_job_status(job_id)
        assert job is not None and job.status is BatchStatus.FAILED
        assert job.error_message == "ValueError: progress must be between 0.0 and 1.0, got 1.5"

    def test_unstorable_result_fails_with_reason(self, queue: BatchQueue) -> None:
        job_id = queue.submit(unstorable_result)
        assert queue.wait([job_id], timeout=60)
        job = queue.get_job_status(job_id)
        assert job is not None and job.status is BatchStatus.FAILED
        assert "cannot be stored" in (job.error_message or "")
        assert "not JSON-serialisable" in (job.error_message or "")

    def test_params_and_ids_checked_at_submit(self, tmp_path: Path) -> None:
        with BatchQueue(status_dir=tmp_path / "s") as queue:
            with pytest.raises(TypeError, match="params.when: datetime is not JSON-serialisable"):
                queue.submit(double, {"when": __import__("datetime").datetime.now()})
            with pytest.raises(ValueError, match="invalid job id"):
                queue.submit(double, {"x": 1}, job_id="../escape")
            with pytest.raises(TypeError, match="func must be callable"):
                queue.submit("double")  # type: ignore[arg-type]
            gate = tmp_path / "gate"
            queue.submit(wait_for_gate, {"gate": str(gate)}, job_id="dup")
            with pytest.raises(ValueError, match="job 'dup' already exists and is"):
                queue.submit(double, {"x": 1}, job_id="dup")
            gate.touch()
            assert queue.wait(["dup"], timeout=30)
            queue.submit(double, {"x": 3}, job_id="dup")  # finished: may run again
            assert queue.wait(["dup"], timeout=30)
            again = queue.get_job_status("dup")
            assert again is not None and again.result == {"value": 6} and again.seq >= 1

    def test_bad_constructor_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="max_concurrent must be >= 1"):
            BatchQueue(0, status_dir=tmp_path)
        with pytest.raises(ValueError, match="executor must be"):
            BatchQueue(status_dir=tmp_path, executor="fibers")  # type: ignore[arg-type]


def test_get_job_status_reads_memory_only(tmp_path: Path) -> None:
    """Right after submit the record is visible (read-your-writes), without disk reads."""
    import sys
    import threading

    with BatchQueue(1, status_dir=tmp_path / "s") as queue:
        me = threading.get_ident()
        opened: list[str] = []
        watching = threading.Event()

        def hook(event: str, args: tuple[object, ...]) -> None:
            if watching.is_set() and threading.get_ident() == me and event == "open":
                opened.append(str(args[0]))

        sys.addaudithook(hook)
        gate = tmp_path / "gate"
        job_id = queue.submit(wait_for_gate, {"gate": str(gate)})
        watching.set()
        job = queue.get_job_status(job_id)
        queue.snapshot()
        watching.clear()
        assert isinstance(job, BatchJob)
        assert opened == []
        gate.touch()
        assert queue.wait([job_id], timeout=30)


@pytest.mark.parametrize("kind", ["threads", "processes"])
@pytest.mark.slow
def test_any_executor_the_user_passes(tmp_path: Path, kind: str) -> None:
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    pool: Executor = (
        ThreadPoolExecutor(2) if kind == "threads"
        else ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    )  # fmt: skip
    try:
        with BatchQueue(status_dir=tmp_path / "s", executor=pool) as queue:
            if kind == "processes":  # any non-thread executor may pickle: checked at submit
                with pytest.raises(TypeError, match="cannot send"):
                    queue.submit(lambda p: p)
            ids = [queue.submit(double, {"x": i}) for i in range(4)]
            assert queue.wait(ids, timeout=60)
            assert [queue.get_job_status(i).result["value"] for i in ids] == [0, 2, 4, 6]  # type: ignore[union-attr]
        # The queue did not shut the user's executor down: it is theirs.
        assert pool.submit(int, "7").result(timeout=30) == 7
    finally:
        pool.shutdown()
