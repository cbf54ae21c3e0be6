"""A Redis server that refuses commands: for now (full, loading) or for good (ACLs, a bad db).

Each against a real redis-server of the test's own: `maxmemory` with `noeviction`, ACL users.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from statusbridge import BackendRefused, BatchQueue, BatchStatus, StatusCache, StatusStore

from support.redis_server import RedisServer
from support.waiting import poll_until, wait_until
from support.workers import wait_for_gate

pytestmark = pytest.mark.slow


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def user_url(server: RedisServer, name: str, rules: str, prefix: str = "acl") -> str:
    acl = ["ACL", "SETUSER", name, "on", ">Sup3r-S3cret-pw", *rules.split()]
    admin(server).execute_command(*acl)  # type: ignore[no-untyped-call]
    return f"redis://{name}:Sup3r-S3cret-pw@127.0.0.1:{server.port}/0?prefix={prefix}"


def test_outcomes_written_while_the_server_is_full_are_kept_and_land_after(
    own_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = tmp_path / "gate"
    with BatchQueue(max_concurrent=4, status_dir=own_server.url()) as queue:
        ids = [queue.submit(wait_for_gate, {"gate": str(gate)}) for _ in range(4)]
        wait_until(
            lambda: all(queue.get_job_status(i).status is BatchStatus.RUNNING for i in ids),  # type: ignore[union-attr]
            60,
            "four running jobs",
        )
        reader = StatusStore(own_server.url())  # reads are allowed on a full server
        wait_until(
            lambda: all((j := reader.read(i)) and j.status is BatchStatus.RUNNING for i in ids),
            60,
            "four RUNNING records on the server",
        )
        # noeviction (the default) with a limit below what is used: every write gets OOM.
        admin(own_server).config_set("maxmemory", "1")
        with caplog.at_level(logging.WARNING):
            gate.touch()
            wait_until(lambda: "refuses writes for now (OOM" in caplog.text, 60, "the outage")
            assert {reader.read(i).status for i in ids} == {BatchStatus.RUNNING}  # type: ignore[union-attr]
            admin(own_server).config_set("maxmemory", "0")
            # Before: the OOM reply was no outage, the outcomes were dropped ('could not
            # record completed'), and the records read RUNNING for ever.
            wait_until(
                lambda: all(reader.read(i).status is BatchStatus.COMPLETED for i in ids),  # type: ignore[union-attr]
                60,
                "the kept outcomes written once the server has room",
            )
        assert queue.wait(ids, timeout=60)
        assert [reader.read(i).result for i in ids] == ["passed"] * 4  # type: ignore[union-attr]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_store_whose_user_lacks_a_permission_names_it_and_the_location(
    own_server: RedisServer,
) -> None:
    url = user_url(own_server, "reader", "~* +@read +ping -evalsha -eval")
    with StatusStore(url) as store, pytest.raises(BackendRefused) as info:
        store.update("job-1", progress=0.5)
    message = str(info.value)
    assert "NOPERM" in message and "ACL" in message
    assert "Sup3r-S3cret-pw" not in message and f":{own_server.port}" in message
    assert "Sup3r-S3cret-pw" not in info.value.location
    assert isinstance(info.value, PermissionError)  # an outage-like OSError to the jobs layer


def test_a_cache_whose_user_lacks_xread_backs_off_instead_of_reloading_in_a_loop(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    StatusStore(own_server.url("acl")).update("seen", progress=0.1)
    url = user_url(own_server, "noxread", "~* &* +@all -xread")
    with caplog.at_level(logging.ERROR), StatusCache(url, reconcile_interval=3600) as cache:
        assert cache.get("seen") is not None  # the initial load is allowed
        wait_until(lambda: "NOPERM" in (cache.health().last_error or ""), 30, "the refusal")
        loads = cache.health().rescans
        # Before: 61 full loads and 60 tracebacks in 5 s, for ever. Now it waits ever longer.
        assert not poll_until(lambda: cache.health().rescans > loads, 3.0)
    refusals = [r for r in caplog.records if "refuses the cache's commands" in r.getMessage()]
    assert len(refusals) == 1  # said once, not at every try
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("db", ["16", "4294967296"])
def test_a_database_the_server_does_not_have_is_one_clear_line(
    own_server: RedisServer, db: str
) -> None:
    url = f"redis://127.0.0.1:{own_server.port}/{db}?prefix=x"
    with pytest.raises((BackendRefused, ValueError)) as info:
        StatusStore(url).update("a", progress=0.1)
    assert "Traceback" not in str(info.value)
    done = subprocess.run(
        [sys.executable, "-m", "statusbridge", "ls", "--dir", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # before: a 60-line traceback


def test_a_server_that_may_evict_records_is_named_in_health_and_the_log(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with StatusCache(own_server.url()) as cache:
        assert cache.health().backend_note is None  # noeviction: Redis's own default
    admin(own_server).config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING), StatusCache(own_server.url()) as cache:
        note = cache.health().backend_note or ""
        assert "maxmemory-policy is allkeys-lru" in note and "noeviction" in note
        cache.rescan()
        cache.rescan()  # every reload checks again; the log says it once
    assert caplog.text.count("maxmemory-policy is allkeys-lru") == 1
