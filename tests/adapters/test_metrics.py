"""Prometheus metrics: the collector over a real cache; real HTTP scrapes of the real command."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from statusbridge import BatchStatus, StatusCache, StatusStore
from statusbridge.metrics import OTHER_BATCHES, StatusCollector, register

from support.processes import popen
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
STATUSES = [s.value for s in BatchStatus]
T0 = datetime(2030, 1, 1, tzinfo=UTC)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def collected(cache: StatusCache, registry: CollectorRegistry) -> Iterator[StatusCollector]:
    collector = StatusCollector(cache, buckets=[10, 60])
    registry.register(collector)
    yield collector
    collector.close()


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def test_every_status_is_present_even_with_no_jobs(
    registry: CollectorRegistry, collected: StatusCollector
) -> None:
    samples = scrape(registry)
    for status in STATUSES:
        assert value(samples, "statusbridge_jobs", status=status) == 0
        assert value(samples, "statusbridge_job_transitions_total", status=status) == 0
    assert value(samples, "statusbridge_job_duration_seconds_count") == 0
    assert value(samples, "statusbridge_cache_invalid_records") == 0
    assert not any("job_id" in dict(labels) or "id" in dict(labels) for _, labels in samples)


def test_transitions_and_durations_count_from_the_collector_start(
    status_dir: Path, store: StatusStore, registry: CollectorRegistry
) -> None:
    store.update("old", status="completed", started_at=T0, completed_at=T0)  # before: not counted
    with StatusCache(status_dir) as cache:
        collector = register(cache, registry, buckets=[10, 60])
        store.update("a", status="running", started_at=T0)
        store.update("a", status="completed", completed_at=T0 + timedelta(seconds=5))
        store.update("b", status="running", started_at=T0)
        store.update("b", status="failed", completed_at=T0 + timedelta(seconds=30))
        store.update("c", status="running", started_at=T0)
        store.update("c", status="completed", completed_at=T0 + timedelta(seconds=600))
        store.update("d")
        wait_until(lambda: value(scrape(registry), "statusbridge_jobs", status="pending") == 1)
        wait_until(
            lambda: value(scrape(registry), "statusbridge_job_duration_seconds_count") == 3,
            message="three jobs seen finishing",
        )
        cache.rescan()  # seen again: not counted again
        samples = scrape(registry)
        collector.close()
    assert value(samples, "statusbridge_jobs", status="completed") == 3
    assert value(samples, "statusbridge_jobs", status="failed") == 1
    assert value(samples, "statusbridge_job_transitions_total", status="completed") == 2
    assert value(samples, "statusbridge_job_transitions_total", status="failed") == 1
    assert value(samples, "statusbridge_job_transitions_total", status="pending") == 1
    # The cache may or may not have caught each job while running: at most 3 entries.
    assert value(samples, "statusbridge_job_transitions_total", status="running") <= 3
    assert value(samples, "statusbridge_job_duration_seconds_bucket", le="10.0") == 1
    assert value(samples, "statusbridge_job_duration_seconds_bucket", le="60.0") == 2
    assert value(samples, "statusbridge_job_duration_seconds_bucket", le="+Inf") == 3
    assert value(samples, "statusbridge_job_duration_seconds_sum") == pytest.approx(635.0)
    assert value(samples, "statusbridge_cache_rescans_total") >= 1


def test_batch_label_is_opt_in_and_bounded(
    store: StatusStore, cache: StatusCache, registry: CollectorRegistry
) -> None:
    for i in range(5):
        store.update(f"j{i}", batch_id=f"batch-{i}", status="completed" if i < 3 else "running")
    store.update("loose", status="pending")
    wait_until(lambda: len(cache.snapshot()) == 6)
    collector = register(cache, registry, batch_label=True, max_batches=3)
    samples = scrape(registry)
    collector.close()
    batches = {dict(labels)["batch"] for name, labels in samples if name == "statusbridge_jobs"}
    # Unfinished batches first (newest id first), then the newest finished one; the rest summed.
    assert batches == {"batch-4", "batch-3", "batch-2", OTHER_BATCHES}
    for status in STATUSES:
        total = sum(
            v for (name, labels), v in samples.items()
            if name == "statusbridge_jobs" and dict(labels)["status"] == status
        )  # fmt: skip
        assert total == cache.snapshot().summary().counts[BatchStatus(status)]
    assert value(samples, "statusbridge_jobs", batch=OTHER_BATCHES, status="completed") == 2
    assert value(samples, "statusbridge_jobs", batch=OTHER_BATCHES, status="pending") == 1


def test_last_change_age_follows_the_injected_clock(
    store: StatusStore, cache: StatusCache, registry: CollectorRegistry
) -> None:
    clock = Clock()
    collector = StatusCollector(cache, clock=clock)
    registry.register(collector)
    clock.now += 7
    assert value(scrape(registry), "statusbridge_cache_last_change_age_seconds") == 7
    store.update("a")
    wait_until(
        lambda: value(scrape(registry), "statusbridge_cache_last_change_age_seconds") == 0,
        message="the change to reset the age",
    )
    clock.now += 3
    assert value(scrape(registry), "statusbridge_cache_last_change_age_seconds") == 3
    collector.close()


def test_bad_buckets_are_refused(cache: StatusCache) -> None:
    with pytest.raises(ValueError, match="buckets"):
        StatusCollector(cache, buckets=[])
    with pytest.raises(ValueError, match="max_batches"):
        StatusCollector(cache, batch_label=True, max_batches=0)


@pytest.mark.slow
def test_a_refused_registration_leaves_nothing_following_the_cache(
    cache: StatusCache, registry: CollectorRegistry
) -> None:
    """A second ``register`` on one registry is refused (the series names are fixed), as
    when a Streamlit script registers on every rerun; the refused collector used to
    stay subscribed to the cache, one more tracker on every change, for good."""
    import gc

    def collectors() -> int:
        gc.collect()
        return sum(isinstance(o, StatusCollector) for o in gc.get_objects())

    first = register(cache, registry)
    before = collectors()
    for _ in range(3):
        with pytest.raises(ValueError, match="Duplicated"):
            register(cache, registry)
    assert collectors() == before
    first.close()


# -- the real command ---------------------------------------------------------


class Server:
    """``python -m statusbridge metrics`` in a child process, on a free port."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.process = popen(  # stopped with Ctrl-C's SIGINT, even where pytest ignores it
            [sys.executable, "-u", "-m", "statusbridge", "metrics", "--dir", str(folder),
             "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), (line, self.process.stderr)
        self.url = line.split()[1]

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=30) as response:
            assert response.status == 200
            return parse(response.read().decode())

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, as a person stops it; killed if it does not end (the test then fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=60)
        finally:
            self.process.kill()  # a no-op once it has exited
            self.process.wait(30)
        return self.process.returncode, err


WRITER = """
import sys
from statusbridge import StatusStore
folder, count = sys.argv[1], int(sys.argv[2])
store = StatusStore(folder)
for i in range(count):
    store.update(f"job-{i}", batch_id="b", status="running", progress=0.5)
    store.update(f"job-{i}", status="failed" if i % 4 == 0 else "completed")
"""


@pytest.mark.slow
def test_scrape_the_command_while_another_process_writes(status_dir: Path) -> None:
    server = Server(status_dir)
    try:
        first = server.scrape()
        assert [value(first, "statusbridge_jobs", status=s) for s in STATUSES] == [0] * 5
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(status_dir), "40"])
        scrapes = [server.scrape()]  # at least one during the writes, usually several
        while writer.poll() is None:
            scrapes.append(server.scrape())
        assert writer.wait(timeout=60) == 0
        final = wait_until(
            lambda: (
                (s := server.scrape())
                and value(s, "statusbridge_job_duration_seconds_count") == 40
                and value(s, "statusbridge_jobs", status="completed") == 30
                and s
            ),
            timeout=30,
            message="the scrape to show all 40 jobs finished",
        )
        for samples in scrapes:  # every scrape is whole: five statuses, counts add up
            counts = [value(samples, "statusbridge_jobs", status=s) for s in STATUSES]
            assert sum(counts) <= 40
        assert value(final, "statusbridge_jobs", status="failed") == 10
        assert value(final, "statusbridge_job_transitions_total", status="completed") == 30
        assert value(final, "statusbridge_job_transitions_total", status="failed") == 10
        assert value(final, "statusbridge_cache_invalid_records") == 0
    finally:
        code, err = server.stop()
    assert code == 130, err  # Ctrl-C: the documented exit code


@pytest.mark.slow
def test_scrape_a_folder_with_a_broken_record(status_dir: Path, store: StatusStore) -> None:
    store.update("good", status="completed")
    (status_dir / "broken.json").write_text('{"schema": 1, "id": "broken", "status": ')
    server = Server(status_dir)
    try:
        samples = server.scrape()
        assert value(samples, "statusbridge_cache_invalid_records") == 1
        assert value(samples, "statusbridge_jobs", status="completed") == 1
        assert sum(value(samples, "statusbridge_jobs", status=s) for s in STATUSES) == 1
    finally:
        server.stop()


@pytest.mark.slow
def test_command_with_batch_label_and_buckets(status_dir: Path, store: StatusStore) -> None:
    store.update("a", batch_id="first", status="running")
    server = Server(status_dir, "--batches", "5", "--buckets", "0.5,2")
    try:
        samples = server.scrape()
        les = {dict(k)["le"] for n, k in samples if n == "statusbridge_job_duration_seconds_bucket"}
        assert les == {"0.5", "2.0", "+Inf"}
        assert value(samples, "statusbridge_jobs", batch="first", status="running") == 1
        assert value(samples, "statusbridge_jobs", batch=OTHER_BATCHES, status="running") == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--port", "70000"], "--port must be between"),
        (["--port", "0", "--batches", "-1"], "--batches must be between 0 and 1000"),
        (["--port", "0", "--batches", "100000000"], "--batches must be between 0 and 1000"),
        ([], "--port"),
        (["--port", "0", "--buckets", "1,x"], "expected numbers separated by commas"),
    ],
)
@pytest.mark.slow
def test_command_usage_errors(status_dir: Path, args: list[str], error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statusbridge", "metrics", "--dir", str(status_dir), *args],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert error in done.stderr


def test_grafana_dashboard_uses_only_the_series_served(
    registry: CollectorRegistry, collected: StatusCollector
) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    served = {name for name, _ in scrape(registry)}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"statusbridge_[a-z_]+", e)}
    assert used == served  # nothing made up, nothing left without a panel
    finished = "completed|failed|cancelled"
    for e in exprs:
        assert set(re.findall(r'status=~?"([a-z|]+)"', e)) <= {*STATUSES, finished}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_cache_up_follows_the_location(status_dir: Path, registry: CollectorRegistry) -> None:
    with StatusCache(status_dir) as cache:
        collector = StatusCollector(cache)
        registry.register(collector)
        assert value(scrape(registry), "statusbridge_cache_up") == 1
        status_dir.rmdir()  # the location is gone: an outage, as a stopped Redis would be
        wait_until(lambda: value(scrape(registry), "statusbridge_cache_up") == 0, 30, "cache_up 0")
        status_dir.mkdir()
        wait_until(lambda: value(scrape(registry), "statusbridge_cache_up") == 1, 30, "cache_up 1")
        collector.close()
    assert value(scrape(registry), "statusbridge_cache_up") == 0  # a closed cache is down


@pytest.mark.slow
def test_the_command_drops_clients_that_send_nothing(status_dir: Path) -> None:
    from statusbridge.cli._metrics import HEADER_TIMEOUT

    server = Server(status_dir)
    idle: list[socket.socket] = []
    try:
        host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
        for _ in range(50):
            idle.append(socket.create_connection((host, int(port)), timeout=60))
        assert value(server.scrape(), "statusbridge_cache_up") == 1  # not blocked by them
        started = time.monotonic()
        for conn in idle:
            assert conn.recv(1) == b""  # closed by the server (the recv times out at 60 s)
        assert time.monotonic() - started < HEADER_TIMEOUT + 30  # dropped, not held for ever
    finally:
        for conn in idle:
            conn.close()
        code, err = server.stop()
    assert code == 130, err
    assert "Traceback" not in err
