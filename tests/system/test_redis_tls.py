"""``rediss://``: a TLS-only redis-server with a throwaway CA made by ``openssl``, the store and
the cache through it, and the TLS parameters of a location (named as redis-py names them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusbridge import BackendUnavailable, StatusCache, StatusStore
from statusbridge.store._location import RedisLocation, parse_location
from statusbridge.store.redis._store import RedisStore

from support.redis_server import RedisServer, TlsFiles, make_tls_files
from support.waiting import wait_until


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls_files: TlsFiles) -> Iterator[RedisServer]:
    """A server that speaks only TLS and wants a client certificate of the test CA."""
    server = RedisServer(tls=tls_files).start()
    try:
        yield server
    finally:
        server.stop()


def test_store_and_cache_over_rediss(tls_server: RedisServer) -> None:
    url = tls_server.url("tls")
    assert url.startswith("rediss://")
    with StatusStore(url) as store, StatusCache(url) as cache:
        assert isinstance(store, RedisStore)
        assert store.client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(
            tls_server.tls.ca if tls_server.tls else None
        )
        job = store.update("j", status="running", progress=0.25, meta={"step": 1})
        wait_until(lambda: cache.get("j") == job, 10, "the write over TLS")
        changed = store.modify("j", lambda current: {"progress": 0.5} if current else None)
        wait_until(lambda: cache.get("j") == changed, 10, "the conditional write")
        assert store.read("j") == changed and store.scan() == {"j": changed}
        assert store.delete("j")
        wait_until(lambda: "j" not in cache.snapshot(), 10, "the delete")
        health = cache.health()
        assert health.backend == "redis" and health.directory_present
        assert str(health.directory).startswith("rediss://")


def test_a_server_certificate_of_an_unknown_ca_is_refused(
    tls_server: RedisServer, tls_files: TlsFiles
) -> None:
    # Without ssl_ca_certs the system's CAs are used, and they did not sign the test CA.
    url = (
        f"rediss://127.0.0.1:{tls_server.port}/0?prefix=tls"
        f"&ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="certificate verify failed"):
        StatusStore(url).update("j")
    assert time.monotonic() - started < 10 * 2  # two attempts, each bounded by 10 s


def test_tls_parameters_parse(tls_files: TlsFiles) -> None:
    where = parse_location(
        f"rediss://h:6380/1?prefix=app&ssl_ca_certs={tls_files.ca}"
        f"&ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"
        "&ssl_cert_reqs=Required&ssl_check_hostname=false"
    )
    assert isinstance(where, RedisLocation) and where.tls
    assert where.ssl_options() == {
        "ssl_ca_certs": str(tls_files.ca),
        "ssl_certfile": str(tls_files.client_cert),
        "ssl_keyfile": str(tls_files.client_key),
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": False,
    }
    unchecked = parse_location("rediss://h?ssl_cert_reqs=none")
    assert isinstance(unchecked, RedisLocation)
    assert unchecked.ssl_options() == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    plain = parse_location("redis://h")
    assert isinstance(plain, RedisLocation) and plain.ssl_options() == {}


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("ssl_ca_certs=", "exactly one non-empty value"),
        ("ssl_ca_certs={missing}", "no file"),
        ("ssl_ca_path={ca}", "no folder"),
        ("ssl_ca_certs={ca}&ssl_ca_certs={ca}", "exactly one"),
        ("ssl_cert_reqs=maybe", "one of none, optional, required"),
        ("ssl_check_hostname=perhaps", "true or false"),
        ("ssl_keyfile={key}", "needs ssl_certfile"),
        ("ssl_cert_reqs=none&ssl_check_hostname=true", "needs a certificate check"),
        ("ssl_password=secret", "unknown parameter"),
    ],
)
def test_malformed_tls_parameters_are_value_errors(
    tls_files: TlsFiles, tmp_path: Path, query: str, why: str
) -> None:
    filled = query.format(ca=tls_files.ca, key=tls_files.client_key, missing=tmp_path / "no.pem")
    url = f"rediss://h/0?{filled}"
    for opener in (parse_location, StatusStore, StatusCache):
        with pytest.raises(ValueError, match="status location") as info:
            opener(url)
        assert url in str(info.value) and why in str(info.value)


def test_tls_parameters_need_rediss(tls_files: TlsFiles) -> None:
    url = f"redis://h/0?ssl_ca_certs={tls_files.ca}"
    with pytest.raises(ValueError, match="need a TLS location: rediss://"):
        parse_location(url)
