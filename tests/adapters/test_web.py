"""statusbridge.web on a real uvicorn server, httpx clients: routes, auth, Host, CORS, events."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from statusbridge import BatchStatus, StatusCache, StatusStore
from statusbridge.record._model import utc_now
from statusbridge.web import _events, create_app
from statusbridge.web._app import end_streams

from support.paused_start import assert_none_started_after, batch_paused_in_its_start
from support.waiting import wait_until
from support.web import Event, events, next_event, serving

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def base(status_dir: Path, cache: StatusCache) -> Iterator[str]:
    """A server without a token (reads open, cancels refused)."""
    with serving(create_app(status_dir, cache=cache), stop=end_streams) as url:
        yield url


@pytest.fixture
def guarded(status_dir: Path, cache: StatusCache) -> Iterator[str]:
    """A server with a token."""
    with serving(create_app(status_dir, cache=cache, token=TOKEN), stop=end_streams) as url:
        yield url


def seen(cache: StatusCache, job_id: str, seq: int = 1) -> None:
    wait_until(lambda: (j := cache.get(job_id)) is not None and j.seq >= seq, message=job_id)


def test_jobs_filters_and_pages(store: StatusStore, cache: StatusCache, base: str) -> None:
    for n in range(5):
        store.update(f"j{n}", status="running" if n % 2 else "pending", batch_id="b1")
    store.update("other", status="completed", batch_id="b2")
    seen(cache, "other")
    wait_until(lambda: len(cache.snapshot()) == 6, message="six jobs")
    every = httpx.get(f"{base}/api/jobs").json()
    assert [j["id"] for j in every["jobs"]] == ["j0", "j1", "j2", "j3", "j4", "other"]
    assert every["next"] is None
    assert every["jobs"][0]["schema"] == 1
    running = httpx.get(f"{base}/api/jobs", params={"batch": "b1", "status": "running"}).json()
    assert [j["id"] for j in running["jobs"]] == ["j1", "j3"]
    two = httpx.get(f"{base}/api/jobs", params=[("status", "running"), ("status", "completed")])
    assert [j["id"] for j in two.json()["jobs"]] == ["j1", "j3", "other"]
    # Paging: follow "next" until it is null.
    pages, url = [], f"{base}/api/jobs?limit=2"
    while url:
        page = httpx.get(url).json()
        pages.append([j["id"] for j in page["jobs"]])
        url = page["next"]
    assert pages == [["j0", "j1"], ["j2", "j3"], ["j4", "other"]]
    for bad in ({"limit": "0"}, {"limit": "x"}, {"limit": "1001"}, {"status": "nope"}):
        assert httpx.get(f"{base}/api/jobs", params=bad).status_code == 400


def test_one_job_and_batches(store: StatusStore, cache: StatusCache, base: str) -> None:
    store.update("a", status="running", batch_id="b1", progress=0.5)
    store.update("b", status="completed", batch_id="b1")
    seen(cache, "b")
    job = httpx.get(f"{base}/api/jobs/a").json()
    assert (job["id"], job["status"], job["progress"]) == ("a", "running", 0.5)
    assert httpx.get(f"{base}/api/jobs/nope").status_code == 404
    assert httpx.get(f"{base}/api/jobs/..%2Fx").status_code == 404
    batches = httpx.get(f"{base}/api/batches").json()["batches"]
    assert [b["id"] for b in batches] == ["b1"]
    one = httpx.get(f"{base}/api/batches/b1").json()
    assert one["total"] == 2
    assert one["counts"]["running"] == 1 and one["counts"]["completed"] == 1
    assert one["state"] == "running"
    assert one["progress"] == 0.75
    assert one["eta_seconds"] is not None
    assert [j["id"] for j in httpx.get(one["jobs"]).json()["jobs"]] == ["a", "b"]
    assert httpx.get(f"{base}/api/batches/none").status_code == 404


def test_links_work_under_a_mount(status_dir: Path, store: StatusStore, cache: StatusCache) -> None:
    store.update("a", batch_id="b1")
    store.update("b", batch_id="b1")
    seen(cache, "b")
    outer = Starlette(routes=[Mount("/status", create_app(status_dir, cache=cache))])
    with serving(outer) as base:
        page = httpx.get(f"{base}/status/api/jobs?limit=1").json()
        assert page["next"].startswith(f"{base}/status/api/jobs?")
        assert [j["id"] for j in httpx.get(page["next"]).json()["jobs"]] == ["b"]
        batch = httpx.get(f"{base}/status/api/batches/b1").json()
        assert batch["jobs"] == f"{base}/status/api/jobs?batch=b1"
        assert httpx.get(f"{base}/status/healthz").status_code == 200


READS = ["/api/jobs", "/api/jobs/a", "/api/batches", "/api/batches/b1"]
WRITES = ["/api/jobs/a/cancel", "/api/batches/b1/cancel"]


def test_with_a_token_every_route_but_healthz_needs_it(
    store: StatusStore, cache: StatusCache, guarded: str
) -> None:
    store.update("a", status="running", batch_id="b1")
    seen(cache, "a")
    wrong = {"Authorization": "Bearer nope"}
    for path in READS:
        assert httpx.get(guarded + path).status_code == 401, path
        assert httpx.get(guarded + path, headers=wrong).status_code == 401, path
        assert httpx.get(guarded + path, headers={"Authorization": TOKEN}).status_code == 401
        assert httpx.get(guarded + path, headers=AUTH).status_code == 200, path
    for path in WRITES:
        assert httpx.post(guarded + path).status_code == 401, path
        assert httpx.post(guarded + path, headers=wrong).status_code == 401, path
    assert httpx.get(f"{guarded}/api/events").status_code == 401
    with httpx.stream("GET", f"{guarded}/api/events", headers=AUTH, timeout=10) as response:
        assert response.status_code == 200
        assert next_event(events(response), "reset").data["jobs"][0]["id"] == "a"
    # /healthz is open, but tells file names and paths only to a client with the token.
    open_health = httpx.get(f"{guarded}/healthz")
    assert open_health.status_code == 200
    assert open_health.json()["running"] is True
    assert "directory" not in open_health.json()
    assert "directory" in httpx.get(f"{guarded}/healthz", headers=AUTH).json()


def test_without_a_token_reads_are_open_and_writes_refused(
    store: StatusStore, cache: StatusCache, base: str
) -> None:
    store.update("a", status="running", batch_id="b1")
    seen(cache, "a")
    for path in READS:
        assert httpx.get(base + path).status_code == 200, path
    for path in WRITES:
        assert httpx.post(base + path).status_code == 403, path
        assert httpx.post(base + path, headers=AUTH).status_code == 403, path
    assert store.read("a").cancel_requested is False  # type: ignore[union-attr]


def test_cancel_routes(store: StatusStore, cache: StatusCache, guarded: str) -> None:
    store.update("run", status="running", batch_id="b1")
    store.update("wait", status="pending", batch_id="b1")
    store.update("done", status="completed", batch_id="b1")
    store.update("solo", status="running")
    seen(cache, "solo")
    answer = httpx.post(f"{guarded}/api/jobs/solo/cancel", headers=AUTH)
    assert answer.json() == {"id": "solo", "cancel_requested": True}
    assert store.read("solo").cancel_requested  # type: ignore[union-attr]
    assert httpx.post(f"{guarded}/api/jobs/nope/cancel", headers=AUTH).status_code == 404
    batch = httpx.post(f"{guarded}/api/batches/b1/cancel", headers=AUTH).json()
    assert batch == {"id": "b1", "cancel_requested": ["run", "wait"], "not_recorded_stopped": 0}
    assert store.read("wait").status is BatchStatus.CANCELLED  # type: ignore[union-attr]
    assert store.read("run").cancel_requested  # type: ignore[union-attr]
    assert httpx.post(f"{guarded}/api/batches/none/cancel", headers=AUTH).status_code == 404


def test_a_foreign_host_is_refused(base: str) -> None:
    """DNS rebinding: a page on evil.test that resolves to 127.0.0.1 sends Host: evil.test."""
    for path in ["/api/jobs", "/api/events", "/healthz"]:
        assert httpx.get(base + path, headers={"Host": "evil.test"}).status_code == 400
    assert httpx.get(f"{base}/api/jobs", headers={"Host": "localhost:1234"}).status_code == 200


def test_cors_is_denied_unless_the_origin_is_allowed(status_dir: Path, cache: StatusCache) -> None:
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    app = create_app(status_dir, cache=cache, allow_origins=["http://app.test"])
    with serving(app) as base:
        foreign = httpx.options(
            f"{base}/api/jobs", headers={"Origin": "http://evil.test", **preflight}
        )
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers
        simple = httpx.get(f"{base}/api/jobs", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in simple.headers
        known = httpx.options(
            f"{base}/api/jobs", headers={"Origin": "http://app.test", **preflight}
        )
        assert known.status_code == 200
        assert known.headers["access-control-allow-origin"] == "http://app.test"
    with serving(create_app(status_dir, cache=cache)) as base:
        none = httpx.options(f"{base}/api/jobs", headers={"Origin": "http://app.test", **preflight})
        assert none.status_code == 400


def test_healthz_is_503_when_the_cache_is_not_running(status_dir: Path) -> None:
    cache = StatusCache(status_dir)
    with serving(create_app(status_dir, cache=cache)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        cache.close()
        answer = httpx.get(f"{base}/healthz")
        assert answer.status_code == 503
        assert answer.json()["running"] is False


# -- the event stream --------------------------------------------------------------------------


def test_stream_starts_with_a_reset_then_sends_changes(
    store: StatusStore, cache: StatusCache, base: str
) -> None:
    store.update("a", status="running")
    seen(cache, "a")
    with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        reset = next_event(stream, "reset")
        assert [j["id"] for j in reset.data["jobs"]] == ["a"]
        assert reset.version == reset.data["version"] == cache.snapshot().version
        store.update("a", progress=0.5, message="half")
        change = next_event(stream)
        assert change.version > reset.version
        assert change.data["jobs"][0]["message"] == "half"
        assert change.data["deleted"] == []
        store.delete("a")
        assert next_event(stream).data == {
            "version": cache.snapshot().version,
            "jobs": [],
            "deleted": ["a"],
        }


def test_batch_filter(store: StatusStore, cache: StatusCache, base: str) -> None:
    store.update("in", batch_id="b1")
    store.update("out", batch_id="b2")
    seen(cache, "out")
    with httpx.stream("GET", f"{base}/api/events?batch=b1", timeout=10) as response:
        stream = events(response)
        assert [j["id"] for j in next_event(stream, "reset").data["jobs"]] == ["in"]
        store.update("out", progress=0.5)  # not this batch's: no event
        store.update("in2", batch_id="b1")
        assert [j["id"] for j in next_event(stream).data["jobs"]] == ["in2"]
        store.delete("in")
        assert next_event(stream).data["deleted"] == ["in"]


def test_resume_with_last_event_id_sends_only_what_was_missed(
    store: StatusStore, cache: StatusCache, base: str
) -> None:
    store.update("a", status="running")
    store.update("b", status="running")
    seen(cache, "b")
    with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
        last = next_event(events(response), "reset")
    # Disconnected: these are missed.
    store.update("a", progress=0.9)
    store.delete("b")
    store.update("c", status="pending")
    seen(cache, "c")
    version = cache.snapshot().version
    headers = {"Last-Event-ID": last.id or ""}
    with httpx.stream("GET", f"{base}/api/events", headers=headers, timeout=10) as response:
        first = next(e for e in events(response) if e.kind != "comment")
    assert first.kind == "change"
    assert first.version == version
    assert {j["id"]: j.get("progress") for j in first.data["jobs"]} == {"a": 0.9, "c": None}
    assert first.data["deleted"] == ["b"]


def test_resume_with_nothing_missed_sends_nothing_until_a_change(
    store: StatusStore, cache: StatusCache, base: str
) -> None:
    store.update("a")
    seen(cache, "a")
    with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
        last = next_event(events(response), "reset")
    headers = {"Last-Event-ID": last.id or ""}
    with httpx.stream("GET", f"{base}/api/events", headers=headers, timeout=10) as response:
        stream = events(response)
        store.update("a", message="later")
        first = next(e for e in stream if e.kind != "comment")
        assert (first.kind, first.data["jobs"][0]["message"]) == ("change", "later")


@pytest.mark.parametrize("why", ["too old", "another run", "garbage", "ahead"])
def test_reset_when_the_gap_cannot_be_told(
    status_dir: Path,
    store: StatusStore,
    cache: StatusCache,
    monkeypatch: pytest.MonkeyPatch,
    why: str,
) -> None:
    monkeypatch.setattr(_events, "HISTORY", 3)
    store.update("a")
    seen(cache, "a")
    with serving(create_app(status_dir, cache=cache), stop=end_streams) as base:
        with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
            last = next_event(events(response), "reset")
        assert last.id is not None
        run, version = last.id.split(":")
        for n in range(5):  # one at a time, more than the history keeps
            store.update("a", message=str(n))
            seen(cache, "a", seq=n + 2)
        sent = {
            "too old": last.id,
            "another run": f"other:{version}",
            "garbage": "x",
            "ahead": f"{run}:{cache.snapshot().version + 10}",
        }[why]
        headers = {"Last-Event-ID": sent}
        with httpx.stream("GET", f"{base}/api/events", headers=headers, timeout=10) as response:
            first = next(e for e in events(response) if e.kind != "comment")
        assert first.kind == "reset"
        assert first.data["jobs"][0]["message"] == "4"


def test_keep_alive_comments_on_a_quiet_stream(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_events, "KEEP_ALIVE_SECONDS", 0.05)
    with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
        stream = events(response)
        next_event(stream, "reset")
        assert next_event(stream, "comment").data == "keep-alive"


def test_a_stalled_client_slows_neither_the_cache_nor_other_clients(
    store: StatusStore, cache: StatusCache, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that never reads: its socket buffers fill, its queue overflows; the others
    get every change, and the stalled one, once it reads again, a reset with the newest state."""
    monkeypatch.setattr(_events, "QUEUE_SIZE", 4)
    big = "x" * 250_000  # fifty changes: more than the socket buffers between them hold
    port = int(base.rpartition(":")[2])
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
            stream = events(response)
            next_event(stream, "reset")
            for n in range(50):
                store.update("a", message=f"{n}", meta={"pad": big})
                change = next_event(stream)
                assert change.data["jobs"][0]["message"] == f"{n}"
        # The stalled client reads again: past what its queue held, it is sent a reset.
        stalled.settimeout(10)
        chunks, tail = [], b""
        while b'"message":"49"' not in tail:
            chunk = stalled.recv(1 << 20)
            assert chunk, "the server closed the stalled stream"
            chunks.append(chunk)
            tail = tail[-64:] + chunk
        received = b"".join(chunks)
        assert received.count(b"event: reset") == 2  # the first state, and the one after overflow
        assert received.count(b"event: change") < 50
    finally:
        stalled.close()


def test_job_data_never_reaches_the_logs(
    store: StatusStore, cache: StatusCache, guarded: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store.update("secret-job", status="running", message="secret message", batch_id="secret-batch")
    seen(cache, "secret-job")
    with httpx.stream("GET", f"{guarded}/api/events", headers=AUTH, timeout=10) as response:
        stream = events(response)
        next_event(stream, "reset")
        store.update("secret-job", progress=0.5)
        next_event(stream)
    httpx.get(f"{guarded}/api/jobs/secret-job", headers=AUTH)
    httpx.post(f"{guarded}/api/batches/secret-batch/cancel", headers=AUTH)
    httpx.get(f"{guarded}/api/jobs", headers={"Authorization": "Bearer wrong-guess"})
    ours = [
        r for r in caplog.records if r.name.startswith(("statusbridge", "uvicorn", "starlette"))
    ]
    for record in ours:
        text = record.getMessage()
        for secret in ("secret", TOKEN, "wrong-guess"):
            assert secret not in text, text


def test_every_backend(location: str) -> None:
    """The same routes and stream over a folder, SQLite and Redis."""
    with StatusStore(location) as store, StatusCache(location) as cache:
        app = create_app(location, cache=cache)
        with serving(app, stop=end_streams) as base:
            store.update("a", status="running", batch_id="b")
            seen(cache, "a")
            assert httpx.get(f"{base}/api/jobs/a").json()["status"] == "running"
            with httpx.stream("GET", f"{base}/api/events", timeout=10) as response:
                stream = events(response)
                next_event(stream, "reset")
                store.update("a", progress=0.25)
                assert next_event(stream).data["jobs"][0]["progress"] == 0.25


def test_an_app_that_owns_its_cache_closes_it_with_its_lifespan(status_dir: Path) -> None:
    app = create_app(status_dir)
    hub: _events.EventHub = app.state.statusbridge_hub
    with serving(app, stop=end_streams) as base:
        assert httpx.get(f"{base}/healthz").json()["running"] is True
    assert hub.cache.health().running is False


def test_queue_overflow_gives_a_reset(
    store: StatusStore, cache: StatusCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the hub itself: a client that does not take its events is owed a reset, not a backlog."""
    monkeypatch.setattr(_events, "QUEUE_SIZE", 1)
    hub = _events.EventHub(cache)

    async def handed_over(seq: int) -> None:
        """Until the hub (on this loop) holds the snapshot with record ``a`` at ``seq``."""
        await asyncio.to_thread(seen, cache, "a", seq)
        while hub._last.version < cache.snapshot().version:
            await asyncio.sleep(0.005)  # the cache thread hands the change to this loop

    async def scenario() -> tuple[bytes, bytes]:
        stream = hub.stream(None, None)
        first = await anext(stream)
        for n in range(1, 4):  # three changes, one at a time: more than the queue holds
            store.update("a", message=str(n))
            await handed_over(n)
        second = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        return first, second

    try:
        first, second = asyncio.run(scenario())
    finally:
        hub.close()
    assert b"event: reset" in first
    assert b"event: reset" in second
    assert b'"message":"3"' in second


def test_version_only_events_of_the_folder_name_the_batches_they_touched(
    store: StatusStore, cache: StatusCache
) -> None:
    """A page's folder fragments learn which batches moved (a batch's fragment goes first);
    a batch's own stream needs no list."""
    hub = _events.EventHub(cache)

    async def scenario() -> tuple[bytes, bytes]:
        folder = hub.stream(None, None, records=False)
        batch = hub.stream(None, "b1", records=False)
        await anext(folder), await anext(batch)  # the resets
        store.update("a", batch_id="b1", message="moves")
        await asyncio.to_thread(seen, cache, "a", 1)
        while hub._last.version < cache.snapshot().version:
            await asyncio.sleep(0.005)  # the cache thread hands the change to this loop
        events = await anext(folder), await anext(batch)
        for stream in (folder, batch):
            await stream.aclose()  # type: ignore[attr-defined]
        return events

    try:
        of_folder, of_batch = asyncio.run(scenario())
    finally:
        hub.close()
    assert b"event: change" in of_folder and b'"batches":["b1"]' in of_folder
    assert b"event: change" in of_batch and b"batches" not in of_batch


def test_events_parse() -> None:
    """The test helper itself: fields, comments, data as JSON."""
    response = httpx.Response(
        200, content=b'retry: 5\n\nid: r:3\nevent: change\ndata: {"a": 1}\n\n: ping\n\n'
    )
    assert list(events(response)) == [
        Event("change", "r:3", {"a": 1}),
        Event("comment", data="ping"),
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_batch_cancel_during_its_start_elsewhere_starts_no_job_after_it(
    batch_locations: tuple[str, str], tmp_path: Path
) -> None:
    """As ``statusbridge cancel --batch``: the route sets the batch's cancel marker first,
    so the jobs its starter (another process) has not recorded yet never start. Before,
    it cancelled only the records it found, and the starter ran the rest."""
    batch_dir, status_dir = batch_locations
    with batch_paused_in_its_start(batch_dir, status_dir, tmp_path) as batch_id:
        app = create_app(status_dir, token=TOKEN, batch_dir=batch_dir)
        with serving(app, stop=end_streams) as url:
            answer = httpx.post(f"{url}/api/batches/{batch_id}/cancel", headers=AUTH, timeout=60)
        cancel_returned = utc_now()
        assert answer.status_code == 200, answer.text
        assert answer.json()["not_recorded_stopped"] > 0
    assert_none_started_after(batch_dir, status_dir, batch_id, cancel_returned, tmp_path)
