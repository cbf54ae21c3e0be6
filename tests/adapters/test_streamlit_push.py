"""The Streamlit push route on statusbridge.web's event stream: its token, server.baseUrlPath,
resuming, one batch's stream, and its streams' end (served by uvicorn here; the demo's server
runs it in test_streamlit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from statusbridge import StatusCache, StatusStore

from support.waiting import wait_until
from support.web import Event, events, next_event, serving

pytest.importorskip("streamlit", reason="the demo extra is not installed")
from streamlit import config

from statusbridge import _streamlit_push as push


@pytest.fixture
def base_url_path() -> Iterator[None]:
    config.set_option("server.baseUrlPath", "/app/")
    try:
        yield
    finally:
        config.set_option("server.baseUrlPath", "")


def test_the_route_honours_base_url_path_and_needs_the_token(
    status_dir: Path, store: StatusStore, cache: StatusCache, base_url_path: None
) -> None:
    routes = push.push_routes(lambda: cache, str(status_dir))
    url = push.events_path_for(str(status_dir.absolute()))
    assert url is not None
    path, _, query = url.partition("?")
    assert path == "/app/statusbridge/events"
    assert query.startswith("token=") and len(query) > len("token=") + 16
    store.update("a")
    wait_until(lambda: cache.get("a"))
    with serving(Starlette(routes=list(routes))) as base:
        assert httpx.get(f"{base}{path}").status_code == 403
        assert httpx.get(f"{base}{path}?token=guess").status_code == 403
        assert httpx.get(f"{base}/statusbridge/events?{query}").status_code == 404
        with httpx.stream("GET", base + url, timeout=10) as response:
            stream = events(response)
            first = next_event(stream, "reset")
            assert first.data == {"version": cache.snapshot().version}  # versions, no records
            store.update("a", message="later")
            assert next_event(stream).data == {"version": cache.snapshot().version}
        # Back with its last event id: what it missed, as one change (no reset).
        store.update("a", message="missed")
        wait_until(lambda: (j := cache.get("a")) and j.message == "missed")
        headers = {"Last-Event-ID": first.id or ""}
        with httpx.stream("GET", base + url, headers=headers, timeout=10) as response:
            again = next(e for e in events(response) if e.kind != "comment")
            assert (again.kind, again.data) == ("change", {"version": cache.snapshot().version})


def test_a_batch_stream_has_the_changes_of_that_batch_and_of_the_batch_list(
    status_dir: Path, store: StatusStore, cache: StatusCache
) -> None:
    store.update("a1", batch_id="a")
    store.update("b1", batch_id="b")
    wait_until(lambda: len(cache.snapshot()) == 2)
    routes = push.push_routes(lambda: cache, str(status_dir))
    url = push.events_path_for(str(status_dir.absolute()), "a")
    assert url is not None and url.endswith("&batch=a")

    def written(job_id: str, message: str = "", batch_id: str | None = None) -> int:
        before = cache.snapshot().version
        store.update(job_id, message=message, **({"batch_id": batch_id} if batch_id else {}))
        wait_until(lambda: cache.snapshot().version > before)
        return cache.snapshot().version

    with serving(Starlette(routes=list(routes))) as base:
        with httpx.stream("GET", base + url, timeout=10) as response:
            stream = (e for e in events(response) if e.kind != "comment")
            reset = next(stream)
            assert reset.kind == "reset" and reset.id is not None
            run = reset.id.partition(":")[0]
            other = written("b1", message="another batch")
            # No event for it: only its id, which a browser keeps for coming back.
            assert next(stream) == Event("id", f"{run}:{other}")
            mine = written("a1", message="this batch")
            assert (e := next(stream)).kind == "change" and e.data == {"version": mine}
            moved_in = written("b1", batch_id="a")  # a job that joins the batch
            assert next(stream).data == {"version": moved_in}
            new_batch = written("c1", batch_id="c")  # a batch appears: a picker shows it
            assert next(stream).data == {"version": new_batch}
            written("c1", message="a batch that was there")
            last = written("a1", message="this batch again")
            assert [e.kind for e in (next(stream), next(stream))] == ["id", "change"]
        # Back after a change of another batch: its id only (no reset, nothing to rerun).
        written("c1", message="while away")
        headers = {"Last-Event-ID": f"{run}:{last}"}
        with httpx.stream("GET", base + url, headers=headers, timeout=10) as response:
            again = next(e for e in events(response) if e.kind != "comment")
            assert again.kind == "id"


def test_streams_end_after_their_lifetime(
    status_dir: Path, cache: StatusCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not push._ending.is_set()  # (no server of this process has stopped)
    monkeypatch.setattr(push, "STREAM_SECONDS", 0.2)
    routes = push.push_routes(lambda: cache, str(status_dir))
    url = push.events_path_for(str(status_dir.absolute()))
    with serving(Starlette(routes=list(routes))) as base:
        with httpx.stream("GET", f"{base}{url}", timeout=10) as response:
            kinds = [event.kind for event in events(response)]  # ends by itself
        assert kinds == ["reset"]
