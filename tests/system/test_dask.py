"""Jobs on Dask workers (LocalCluster, 2 worker processes) reporting through a Redis URL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from statusbridge import BatchQueue, BatchStatus

from support.processes import adopt
from support.redis_server import free_port
from support.waiting import wait_until
from support.workers import double, until_cancelled, wait_for_gate

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_cluster_client() -> Iterator[Any]:
    import dask

    # A task whose worker dies is not run again elsewhere: the job it ran has failed.
    scheduler_port = free_port()
    # (dashboard_address=None still means :8787 in this version: a port of ours instead.)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            scheduler_port=scheduler_port,
            dashboard_address=f"127.0.0.1:{free_port(frozenset({scheduler_port}))}",
        )
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


@pytest.fixture
def dask_client(dask_cluster_client: Any) -> Iterator[Any]:
    """The module's cluster, with as many workers after the test as before it."""
    yield dask_cluster_client
    # A worker the test killed is replaced by its nanny (in this process): the new one
    # belongs to the module's cluster, which ends it at the module's end.
    dask_cluster_client.wait_for_workers(2, timeout=60)
    adopt(dask_cluster_client.run(os.getpid).values())


def test_jobs_run_on_dask_workers(dask_client: Any, redis_url: str) -> None:
    executor = dask_client.get_executor(pure=False)
    with BatchQueue(status_dir=redis_url, executor=executor) as queue:
        ids = [queue.submit(double, {"x": x}) for x in range(4)]
        wait_until(lambda: all((j := queue.get_job_status(i)) and j.is_finished for i in ids),
                   60, "the jobs")  # fmt: skip
        results = [queue.get_job_status(i).result["value"] for i in ids]  # type: ignore[union-attr]
        assert results == [0, 2, 4, 6]
        owners = {queue.get_job_status(i).owner for i in ids}  # type: ignore[union-attr]
        assert all(o and not o.endswith(f":{os.getpid()}") for o in owners)  # not this process


def test_cancel_reaches_a_job_on_a_dask_worker(dask_client: Any, redis_url: str) -> None:
    executor = dask_client.get_executor(pure=False)
    with BatchQueue(status_dir=redis_url, executor=executor) as queue:
        job_id = queue.submit(until_cancelled, {})
        wait_until(lambda: (j := queue.get_job_status(job_id)) and j.progress, 60, "running")
        assert queue.cancel(job_id)
        job = wait_until(
            lambda: (j := queue.get_job_status(job_id)) and j.is_finished and j, 30, "the cancel"
        )
        assert job.status is BatchStatus.CANCELLED
        assert job.meta["cancelled_inside"] is True


def test_a_killed_dask_worker_fails_its_job(
    dask_client: Any, redis_url: str, tmp_path: Any
) -> None:
    executor = dask_client.get_executor(pure=False)
    timeout = 5.0
    with BatchQueue(
        status_dir=redis_url, executor=executor, heartbeat_interval=0.5, heartbeat_timeout=timeout
    ) as queue:
        job_id = queue.submit(wait_for_gate, {"gate": str(tmp_path / "never")})
        running = wait_until(
            lambda: (j := queue.get_job_status(job_id)) and "pid" in j.meta and j, 60, "running"
        )
        os.kill(running.meta["pid"], signal.SIGKILL)
        job = wait_until(
            lambda: (j := queue.get_job_status(job_id)) and j.is_finished and j,
            timeout + 15,  # the heartbeat timeout, plus the supervisor's round on a loaded box
            "FAILED after the worker died",
        )
        assert job.status is BatchStatus.FAILED
        assert job.error_message
