"""Fixtures every layer shares: a fresh status folder, a Redis server, one location per backend.

Helpers (waiting, workers for other processes, the Redis and Xvfb launchers) live in the
importable ``support`` package, not here: ``from support.waiting import wait_until``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusbridge import StatusCache, StatusStore

from support.processes import leftovers, own_resource_tracker, started_since, tag_this_run
from support.redis_server import RedisServer

tag_this_run()  # before any fixture starts a process: every child of this run carries it


@pytest.fixture
def status_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "batch_status"
    folder.mkdir()
    return folder


@pytest.fixture
def store(status_dir: Path) -> Iterator[StatusStore]:
    with StatusStore(status_dir) as s:
        yield s


@pytest.fixture
def cache(status_dir: Path) -> Iterator[StatusCache]:
    with StatusCache(status_dir, reconcile_interval=30.0) as c:
        yield c


# -- Redis (a real redis-server; see tests/support/redis_server.py) ----------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A Redis server of this test's own: it may be reconfigured, stopped or killed."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """A fresh prefix per test on the session's server: tests cannot see each other's keys."""
    return redis_server.url(f"t{next(_prefixes)}")


_prefixes = itertools.count(1)


# Each backend the contract suite runs on. A new backend is one more entry here (and one
# more branch in ``location``). Backends that start a server belong to the slow tier.
BACKENDS = [
    pytest.param("folder", id="folder"),
    pytest.param("redis", id="redis", marks=pytest.mark.slow),
    pytest.param("sqlite", id="sqlite"),
]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a StatusStore keeps records, once per backend: a folder, or a URL on a real server."""
    if request.param == "folder":
        return str(tmp_path / "batch_status")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/status.db"  # tmp_path is absolute: four slashes
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def batch_locations(location: str, tmp_path: Path) -> tuple[str, str]:
    """(batch_dir, status_dir) of a BatchManager: two folders, or the same URL for both."""
    if location.startswith(("redis://", "rediss://", "sqlite://")):
        return location, location
    return str(tmp_path / "batches"), location


# -- no process outlives the test that started it, nor the run ----------------------------------


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail the test (not a later one) whose child or grandchild is still alive after it.

    Autouse and function-scoped, so it is set up after every session or module fixture (a
    Redis server shared by many tests is not counted) and torn down after the test's own.
    """
    since = time.time()
    before = {p.pid for p in started_since(0)}
    yield
    left = leftovers(since, before, grace=5.0)
    if left:
        pytest.fail(
            "processes this test started are still running (now killed):\n  " + "\n  ".join(left)
        )


_RUN_STARTED = time.time()

_SYSTEM = Path(__file__).parent / "system"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tier: everything under tests/system/ (real processes, browsers, servers) and any
    test on a real Redis server. Other slow tests carry ``@pytest.mark.slow`` themselves."""
    for item in items:
        on_redis = "redis_server" in getattr(item, "fixturenames", ())
        if on_redis or _SYSTEM in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any process it started outlives it (after every fixture's teardown)."""
    left = leftovers(_RUN_STARTED, own_resource_tracker(), grace=10.0)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "processes started by this test run outlived it (now killed):\n  " + (
            "\n  ".join(left)
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
