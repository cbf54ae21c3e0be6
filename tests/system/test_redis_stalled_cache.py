"""A Redis cache that stalled while the feed was trimmed past it reloads when it wakes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from statusbridge import StatusStore
from statusbridge.store.redis._store import RedisStore

from support.redis_server import RedisServer
from support.waiting import wait_until

pytestmark = pytest.mark.slow

CHILD = "import sys; from support.backend_workers import follow_and_answer as f; f(sys.argv[1])"


def test_a_cache_stopped_while_the_feed_was_trimmed_reloads_when_it_continues(
    own_server: RedisServer,
) -> None:
    url = own_server.url("stall")
    store = StatusStore(url)
    assert isinstance(store, RedisStore)
    store.update("before", progress=0.1)
    tests_dir = str(Path(__file__).parents[1])
    path = os.pathsep.join([tests_dir, *sys.path])  # the child imports what this run does
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=tests_dir, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"

        def jobs_seen() -> int:
            child.stdin.write("count\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            return int(child.stdout.readline())  # type: ignore[union-attr]

        assert jobs_seen() == 1
        child.send_signal(signal.SIGSTOP)
        for i in range(10):
            store.update(f"while-stopped-{i}", progress=0.5)
        redis.Redis(host="127.0.0.1", port=own_server.port).xtrim(store.keys.feed, maxlen=0)
        child.send_signal(signal.SIGCONT)
        # Its reconcile is an hour away: only the counter check can bring the ten jobs
        # (before: nothing new on the stream revealed the gap, and it waited for it).
        wait_until(lambda: jobs_seen() == 11, 30, "the stalled cache to reload")
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.communicate(timeout=30)  # reaps it and closes its pipes
