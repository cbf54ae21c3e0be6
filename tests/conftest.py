"""Shared fixtures: a fresh status folder per test; waiting on conditions, never fixed sleeps."""

from __future__ import annotations

import itertools
import os
import pickle
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from _redis_server import RedisServer
from support.processes import leftovers, own_resource_tracker, started_since, tag_this_run

from statusbridge import StatusCache, StatusStore
from statusbridge.cache._watcher import native_backend

T = TypeVar("T")

tag_this_run()  # before any fixture starts a process: every child of this run carries it

NATIVE_BACKEND = native_backend()
"""The watchdog backend of this platform: tests of live events expect it, not a name."""

needs_inotify = pytest.mark.skipif(
    NATIVE_BACKEND != "inotify",
    reason=f"tests inotify itself; this platform's watchdog backend is {NATIVE_BACKEND}",
)


def poll_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)  # a poll interval inside a condition wait, not a fixed sleep
        delay = min(delay * 2, 0.05)
    return True


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    Typed for ``lambda: (job := ...) and job.ready and job``: what it returns is never
    ``None`` or ``False``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(delay)  # a poll interval inside a condition wait, not a fixed sleep
        delay = min(delay * 2, 0.05)


def process_resources() -> tuple[int, int, int]:
    """(threads, open descriptors, inotify watches) of this process, from Linux's /proc."""
    if not os.path.isdir("/proc/self/fdinfo"):
        pytest.skip("counting descriptors and inotify watches needs Linux /proc")
    fds = os.listdir("/proc/self/fd")
    watches = 0
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as info:
                watches += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:  # closed meanwhile (or the listing's own descriptor)
            continue
    return threading.active_count(), len(fds), watches


def no_more_than(before: tuple[int, ...]) -> Callable[[], bool]:
    """Condition: every count of process_resources() is back at (or below) ``before``."""
    return lambda: all(now <= then for now, then in zip(process_resources(), before, strict=True))


NOBODY = 65534


def run_as_nobody(func: Callable[[], T]) -> T:
    """Run ``func`` in a forked child that dropped root to uid/gid nobody; return its result.

    Tests run as root here, and root ignores permission bits. The child is forked,
    not spawned: nobody may not be able to read this interpreter's files, so
    whatever ``func`` needs should be imported before (run it once as root first).
    """
    if not hasattr(os, "fork") or os.geteuid() != 0:
        pytest.skip("needs root (to drop privileges to nobody in a child process)")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                payload: tuple[bool, object] = (True, func())
            except BaseException as exc:
                payload = (False, "".join(traceback.format_exception(exc)))
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(payload, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        pytest.fail(f"as nobody, in the child:\n{value}")
    return value  # type: ignore[no-any-return]


def temp_files(folder: Path) -> list[str]:
    """Writers' temp files, in the folder (other writers) or its hidden .tmp/ (StatusStore)."""
    found = []
    for where in (folder, folder / ".tmp"):
        if where.is_dir():
            found += [
                n
                for n in os.listdir(where)
                if n.startswith(".") and n.endswith(".tmp") and (where / n).is_file()
            ]
    return sorted(found)


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


# -- Redis (a real redis-server; see tests/_redis_server.py) ------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
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


@pytest.fixture(params=["folder", "redis"])
def batch_locations(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(batch_dir, status_dir) of a BatchManager: two folders, or the same Redis URL for both."""
    if request.param == "folder":
        return str(tmp_path / "batches"), str(tmp_path / "batch_status")
    url: str = request.getfixturevalue("redis_url")
    return url, url


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
        pytest.fail("processes this test started are still running (now killed):\n  "
                    + "\n  ".join(left))


_RUN_STARTED = time.time()


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
