"""Redis writes that must never corrupt a record: exact integers, nothing written before an
error, and no record recreated half-empty after the server evicted it (issue 26 items 2, 4).

Each against a real redis-server: the session's for plain writes, one of the test's own
with ``maxmemory`` and an evicting ``maxmemory-policy`` for eviction.
"""

from __future__ import annotations

import logging

import pytest
import redis

from statusbridge import (
    InvalidRecordError,
    RecordVanished,
    StatusCache,
    StatusStore,
)
from statusbridge.cli._doctor import diagnose
from statusbridge.record._model import utc_now
from statusbridge.store._store import merged
from statusbridge.store.redis._store import RedisStore

from support.redis_server import RedisServer
from support.waiting import wait_until

pytestmark = pytest.mark.slow


def redis_store(url: str) -> RedisStore:
    store = StatusStore(url)
    assert isinstance(store, RedisStore)
    return store


def test_a_big_seq_stays_an_exact_integer_after_another_writer_updates(redis_url: str) -> None:
    """Before: Lua printed seq + 1 as 1.2345678901235e+14, and the record was invalid for good."""
    store = redis_store(redis_url)
    store.update("j", message="hand-edited below")
    store.client.hset(store.keys.job("j"), "seq", "123456789012345")
    other = redis_store(redis_url)  # holds no record of j: the server's is merged into
    job = other.update("j", progress=0.5)
    assert job.seq == 123456789012346
    assert store.client.hget(store.keys.job("j"), "seq") == b"123456789012346"
    assert store.read("j") == job
    assert store.update("j", progress=0.6).seq == 123456789012347  # the store that wrote first


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("message", "123"),  # valid JSON, not a valid value
        ("error_message", "[1]"),
        ("created_at", '"yesterday"'),
    ],
)
def test_a_record_with_a_wrong_type_is_refused_before_anything_is_written(
    redis_url: str, field: str, text: str
) -> None:
    """Before: update() raised InvalidRecordError after the write (seq 2, progress 0.6)."""
    store = redis_store(redis_url)
    store.update("j", progress=0.1)
    key = store.keys.job("j")
    store.client.hset(key, field, text)
    before = store.client.hgetall(key)
    feed = store.client.xlen(store.keys.feed)
    for writer in (store, redis_store(redis_url)):  # one that wrote it, one that did not
        with pytest.raises(InvalidRecordError, match="refusing to overwrite"):
            writer.update("j", progress=0.6)
        assert store.client.hgetall(key) == before
    assert store.client.xlen(store.keys.feed) == feed  # no entry for a write that did not happen


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def evict_some(server: RedisServer, store: RedisStore, count: int) -> set[str]:
    """Write ``count`` records, then make the server (``allkeys-lru``) evict the oldest keys.

    Redis's LRU clock ticks once a second: the records are left until the server says
    they have been idle a tick, so that the ids set, the feed and its counter, touched by
    every later write, are the newest keys (a server's steady state). Returns the ids
    whose hashes went.
    """
    ids = [f"job-{i:03d}" for i in range(count)]
    params = {"pad": "x" * 200}
    for job_id in ids:
        store.update(job_id, status="running", batch_id="b1", params=params)
    server_admin = admin(server)
    last = store.keys.job(ids[-1])
    wait_until(lambda: server_admin.object("idletime", last), 10, "one tick of the LRU clock")
    store.update("busy", progress=0.0)
    server_admin.config_set("maxmemory-policy", "allkeys-lru")
    used = int(server_admin.info("memory")["used_memory"])
    server_admin.config_set("maxmemory", str(used - 30_000))
    try:
        for n in range(1, 11):  # writes make room: the server evicts first
            store.update("busy", progress=n / 10)
    finally:
        server_admin.config_set("maxmemory", "0")
    gone = {job_id for job_id in ids if not store.client.exists(store.keys.job(job_id))}
    assert gone, "nothing was evicted: the test proves nothing"
    assert store.client.scard(store.keys.ids) == count + 1, "the ids set lost members"
    return gone


def test_an_evicted_record_is_noticed_by_the_cache_and_never_recreated_half_empty(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_server.url()
    store = redis_store(url)
    worker = redis_store(url)  # another process's store: it read nothing
    with StatusCache(url, reconcile_interval=3600) as cache, caplog.at_level(logging.WARNING):
        gone = evict_some(own_server, store, 200)
        wait_until(lambda: "busy" in cache.snapshot(), 30, "the cache to follow the writes")
        cache.rescan()  # (eviction writes no feed entry: a full load finds it)
        health = cache.health()
        # Before: invalid=0, last_error=None, nothing logged.
        assert health.vanished_records == len(gone)
        assert set(health.vanished_ids) <= gone and health.vanished_ids
        assert not gone & set(cache.snapshot())  # as a fresh load shows it
        assert "vanished" in caplog.text and "noeviction" in caplog.text
        vanished = [f for f in diagnose(url) if "vanished" in f.title]
        assert len(vanished) == 1 and not vanished[0].ok  # statusbridge doctor says so too
        assert f"{len(gone)} record(s)" in vanished[0].title
        cache.rescan()
        assert cache.health().vanished_records == len(gone)  # counted once
        victim = sorted(gone)[0]
        for writer in (store, worker):
            # A heartbeat or a final write: before, the record came back without
            # batch_id and params.
            with pytest.raises(RecordVanished, match="without a delete"):
                writer.update(victim, progress=0.9, heartbeat_at=None)
            with pytest.raises(RecordVanished):
                writer.modify(victim, lambda current: {"status": "completed"})
        assert not store.client.exists(store.keys.job(victim))
        # Deleting it on purpose starts it over.
        assert not store.delete(victim)  # (no record to delete, but its id is released)
        assert store.update(victim, progress=0.1).seq == 1
        wait_until(lambda: victim in cache.snapshot(), 30, "the new record")
        assert cache.health().vanished_records == len(gone)


def test_a_record_evicted_between_two_reads_of_the_feed_is_noticed(
    own_server: RedisServer,
) -> None:
    """The feed names a job, its hash is gone, no delete took its id: vanished, not deleted."""
    url = own_server.url()
    store = redis_store(url)
    with StatusCache(url, reconcile_interval=3600) as cache:
        store.update("deleted", batch_id="b1")
        wait_until(lambda: "deleted" in cache.snapshot(), 30, "the record")
        new = merged("doomed", None, {"batch_id": "b1"}, utc_now())
        create = store._write_args("doomed", {}, new, None, None)
        with store.client.pipeline(transaction=True) as pipe:
            # One transaction: a write, then its hash evicted (eviction deletes the key
            # alone, nothing else), and a real delete of another job.
            store._write(keys=store.keys.writes("doomed"), args=create, client=pipe)
            pipe.delete(store.keys.job("doomed"))
            store._delete(keys=store.keys.writes("deleted"), args=["deleted", 100], client=pipe)
            pipe.execute()
        wait_until(lambda: cache.health().vanished_records, 30, "the vanished record")
        wait_until(lambda: "deleted" not in cache.snapshot(), 30, "the delete")
        health = cache.health()
        assert health.vanished_records == 1 and health.vanished_ids == ("doomed",)
        assert "doomed" not in cache.snapshot()


def test_creating_many_refuses_a_vanished_record_and_creates_the_others(redis_url: str) -> None:
    store = redis_store(redis_url)
    store.update("evicted", batch_id="b", params={"i": 0})
    store.client.delete(store.keys.job("evicted"))  # as eviction does: the hash alone
    with pytest.raises(RecordVanished, match="without a delete"):
        store.create_absent({"evicted": {"batch_id": "b"}, "fresh": {"batch_id": "b"}})
    assert store.read("evicted") is None  # never recreated half-empty
    fresh = store.read("fresh")
    assert fresh is not None and fresh.batch_id == "b" and fresh.seq == 1
