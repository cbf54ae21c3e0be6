"""Faults only a server backend has: URLs, an unreachable server, lost connections, a server
restarted empty, a trimmed change stream, prefixes side by side. A real redis-server each time."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from statusbridge import (
    BackendUnavailable,
    InvalidRecordError,
    StatusBridgeError,
    StatusCache,
    StatusStore,
)
from statusbridge.record import BatchJob
from statusbridge.record._model import utc_now
from statusbridge.store._location import RedisLocation, parse_location
from statusbridge.store._store import merged
from statusbridge.store.redis._store import RedisStore

from support.redis_server import RedisServer, refused_port
from support.waiting import wait_until


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://host:notaport/0",
        "redis://host:99999/0",
        "redis://host/zero",
        "redis://host/0?prefix=",
        "redis://host/0?prefix={evil}",
        "redis://host/0?colour=red",
        "redis://host/0#frag",
        "http://host/status",
        "file://otherhost/abs",
    ],
)
def test_malformed_urls_raise_value_error_naming_them(url: str) -> None:
    for opener in (parse_location, StatusStore, StatusCache):
        with pytest.raises(ValueError, match="status location") as info:
            opener(url)
        assert repr(url) in str(info.value) or url in str(info.value)


def test_locations_parse() -> None:
    where = parse_location("rediss://me:s%40cret@example.org:7000/3?prefix=app")
    assert isinstance(where, RedisLocation)
    assert (where.tls, where.host, where.port, where.db) == (True, "example.org", 7000, 3)
    assert (where.username, where.password, where.prefix) == ("me", "s@cret", "app")
    assert "s@cret" not in str(where) and "***" in str(where)
    assert where.key("ids") == "{app}:ids"
    assert str(parse_location("file:///tmp/x")) == "/tmp/x"
    default = parse_location("redis://localhost")
    assert isinstance(default, RedisLocation)
    assert (default.port, default.db, default.prefix) == (6379, 0, "statusbridge")


def test_unreachable_server_is_a_clear_error_within_10s() -> None:
    with refused_port() as port:
        url = f"redis://127.0.0.1:{port}/0"  # nothing listens there, nor can meanwhile
        started = time.monotonic()
        store = StatusStore(url)  # opening touches nothing, like a folder store
        with pytest.raises(BackendUnavailable, match="unavailable") as info:
            store.update("j", progress=0.1)
        assert isinstance(info.value, StatusBridgeError)
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(BackendUnavailable):
            StatusCache(url)
        assert time.monotonic() - started < 10 * 2  # two attempts, each bounded by 10 s


@pytest.mark.timeout(40)
def test_a_frozen_server_is_reported_after_one_command_timeout(own_server: RedisServer) -> None:
    """SIGSTOP: the port still accepts connections, but nothing answers (a hung server).

    Each call used to try three times, each for the full socket timeout (10 s): 30 s
    per call, so the two calls here outlasted the test's timeout. Now a timeout is
    not retried: each call ends at the first one (``COMMAND_TIMEOUT``, 8 s).
    """
    url = own_server.url()
    store = StatusStore(url)
    store.update("j", status="running")  # connected before the server freezes
    assert own_server.process is not None
    own_server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(BackendUnavailable, match="unavailable"):
            store.update("j", progress=0.5)
        with pytest.raises(BackendUnavailable, match="unavailable"):
            StatusStore(url).read("j")  # a new connection: accepted by the kernel, then silence
    finally:
        own_server.process.send_signal(signal.SIGCONT)
        store.close()


def test_two_prefixes_on_one_server_are_isolated(redis_server: RedisServer) -> None:
    one, two = redis_server.url("iso-one"), redis_server.url("iso-two")
    with StatusStore(one) as a, StatusStore(two) as b, StatusCache(two) as cache_b:
        a.update("same-id", message="one")
        b.update("other", message="two")
        wait_until(lambda: "other" in cache_b.snapshot(), 10, "the second prefix's job")
        assert "same-id" not in cache_b.snapshot()
        assert sorted(a.scan()) == ["same-id"] and sorted(b.scan()) == ["other"]
        assert a.cleanup(max_age_hours=0) == 0 and b.delete("same-id") is False
        assert a.read("same-id") is not None


def test_client_kill_while_a_writer_writes_converges(own_server: RedisServer) -> None:
    url = own_server.url()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with StatusStore(url) as store:
            while not stop.is_set():
                store.update(f"w{written[0] % 5}", progress=(written[0] % 100) / 100)
                written[0] += 1

    with StatusCache(url) as cache:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            wait_until(lambda: written[0] > 50, 20, "the writer to get going")
            killer = redis.Redis(port=own_server.port)
            killed = killer.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 2  # the writer's connection and the cache's
            mark = written[0]
            wait_until(lambda: written[0] > mark + 50, 20, "the writer to go on after the kill")
        finally:
            stop.set()
            thread.join(30)
        truth = StatusStore(url).scan()
        wait_until(lambda: cache.snapshot() == truth, 15, "the cache to converge")
        # (Whether the cache saw an error depends on where the kill found its reader: a blocked
        # read fails and reloads; an idle connection is replaced silently by redis-py before
        # the next read, which then continues from the stream id it had. Both converge.)
        health = cache.health()
        assert health.running and health.directory_present


def test_server_restarted_empty(own_server: RedisServer) -> None:
    url = own_server.url()
    store = StatusStore(url)
    store.update("before", progress=0.5)
    with StatusCache(url) as cache:
        assert "before" in cache.snapshot()
        own_server.restart_empty()
        after = store.update("after", progress=0.1)
        wait_until(
            lambda: "before" not in cache.snapshot() and cache.get("after") == after,
            15,
            "the restart to be noticed",
        )
        assert cache.health().backend == "redis"


def test_server_down_shows_in_health_then_recovers(own_server: RedisServer) -> None:
    url = own_server.url()
    with StatusCache(url) as cache:
        own_server.stop()
        wait_until(lambda: not cache.health().directory_present, 15, "the lost connection")
        assert cache.health().backend_note and cache.health().last_error
        own_server.start()
        store = StatusStore(url)
        job = store.update("back")
        wait_until(lambda: cache.get("back") == job, 20, "the reconnect")
        assert cache.health().directory_present and cache.health().backend_note is None


def test_stream_trimmed_behind_the_cache_reloads(redis_url: str) -> None:
    store = StatusStore(redis_url)
    assert isinstance(store, RedisStore)
    store.update("first")
    with StatusCache(redis_url) as cache:
        rescans = cache.health().rescans

        # One transaction: a write, the stream trimmed to nothing, another write. The cache
        # reads only the second entry, numbered two past its position: a gap it must notice.
        def create(job_id: str) -> list[str | bytes | int]:
            return store._write_args(job_id, {}, merged(job_id, None, {}, utc_now()), None, None)

        with store.client.pipeline(transaction=True) as pipe:
            store._write(keys=store.keys.writes("lost"), args=create("lost"), client=pipe)
            pipe.xtrim(store.keys.feed, maxlen=0)
            store._write(keys=store.keys.writes("seen"), args=create("seen"), client=pipe)
            pipe.execute()
        wait_until(lambda: {"first", "lost", "seen"} <= set(cache.snapshot()), 10, "reload")
        assert cache.health().rescans > rescans
        assert cache.snapshot() == store.scan()


def test_missing_redis_server_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from support.redis_server import redis_server_binary

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without redis-server
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_server_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        redis_server_binary()


def test_dropped_redis_caches_and_stores_release_threads_and_sockets(redis_url: str) -> None:
    import gc

    from support.resources import no_more_than, process_resources

    StatusStore(redis_url).update("j")
    StatusCache(redis_url).close()  # warm up (imports, scripts)
    gc.collect()
    before = process_resources()
    for _ in range(20):
        store = StatusStore(redis_url)
        store.update("j", progress=0.5)
        cache = StatusCache(redis_url)
        assert cache.get("j") is not None
        del store, cache
    gc.collect()
    wait_until(no_more_than(before), 20, "threads and sockets back where they started")


def test_rescan_of_a_closed_cache_leaves_no_connection_open(redis_url: str) -> None:
    """A closed cache may still be asked to rescan (as a folder cache is), but close()
    released its sockets: the rescan used to reconnect and keep the socket open."""
    from support.resources import process_resources

    with StatusStore(redis_url) as store:
        store.update("a", status="running")
        cache = StatusCache(redis_url)
        cache.close()
        store.update("b", status="pending")
        before = process_resources()
        snap = cache.rescan()
        assert sorted(snap) == ["a", "b"]  # it did load the server's records
        assert process_resources()[1] <= before[1], "a socket stayed open after close()"
    cache.close()


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("message", '"unterminated'),  # a field the update keeps
        ("progress", "0.5.5"),  # a field the update replaces
        ("seq", "twelve"),  # a field the server replaces
        ("m:not-json-key", "1"),  # a meta key that is not a JSON string
    ],
)
def test_update_refuses_to_overwrite_an_undecodable_hash(
    redis_url: str, field: str, text: str
) -> None:
    store = StatusStore(redis_url)
    assert isinstance(store, RedisStore)
    store.update("j", progress=0.1, message="ok", meta={"a": 1})
    key = store.keys.job("j")
    store.client.hset(key, field, text)
    before = store.client.hgetall(key)
    with pytest.raises(InvalidRecordError, match="refusing to overwrite"):
        store.update("j", progress=0.4, meta={"a": 2})
    assert store.client.hgetall(key) == before


def test_update_short_path_agrees_with_the_server(redis_url: str) -> None:
    """A store works every update out itself (``merged``); the server applies it if the hash
    is still the record the store holds (its fingerprint), else sends its record back
    (nothing written) and the change is merged into that one and sent again.
    Either way the record update() returns is the one the server holds."""
    store = StatusStore(redis_url)
    other = StatusStore(redis_url)
    assert isinstance(store, RedisStore)
    write: Callable[..., Any] = store._write
    replies: list[int] = []

    def counted(**kwargs: object) -> object:  # a spy on the real script call
        reply = write(**kwargs)
        replies.append(len(reply))
        return reply

    store._write = counted  # type: ignore[assignment]
    steps: list[Callable[[], object]] = [
        lambda: store.update("j", progress=0.1, meta={"a": 1, "b": [1, 2]}),  # a new record
        lambda: store.update("j", status="running", meta={"a": 2}),  # short: started_at
        lambda: store.update("j", progress=0.5, message="half"),  # short
        lambda: other.update("j", message="from elsewhere"),  # another writer
        lambda: store.update("j", progress=0.6),  # stale: the hash changed; then short
        lambda: store.client.hset(store.keys.job("j"), "message", '"by hand"'),  # an edit
        lambda: store.update("j", progress=0.7),  # stale again
        lambda: store.update("j", status="completed", progress=None),  # short: completed_at
        lambda: store.update("j", error_message="late"),  # short
        lambda: store.update("j", status="running", started_at=None),  # short: filled again
    ]
    for step in steps:
        result = step()
        if isinstance(result, BatchJob) and result is not None:
            assert result == store.read("j")
    # (2: written, and its feed entry's number; 3: the server sent its record back)
    assert replies == [2, 2, 2, 3, 2, 3, 2, 2, 2, 2]
    final = store.read("j")
    assert final is not None and final.seq == 9 and final.message == "by hand"
    assert final.meta == {"a": 2, "b": (1, 2)} and final.progress_known is False
    assert final.started_at is not None and final.completed_at is not None
    assert store.delete("j") and store.update("j").seq == 1  # forgotten with the record
