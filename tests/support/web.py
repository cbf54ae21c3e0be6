"""A real uvicorn server for ``statusbridge.web`` tests, and a server-sent-events reader.

The server runs on a thread of the test's process, on a free port of this project's range;
leaving the ``with`` ends its event streams (uvicorn waits for them) and stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from support.redis_server import free_port
from support.waiting import wait_until


@contextmanager
def serving(app: ASGIApp, *, stop: Any = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and yield its base URL; ``stop(app)`` runs before stopping
    (``statusbridge.web._app.end_streams`` for an app with open streams)."""
    port = free_port()
    # No access log, as in ``statusbridge serve``: its lines carry the paths, job ids included.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), message="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        if stop is not None:
            stop(app)
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass(frozen=True)
class Event:
    """One server-sent event (``kind`` "comment" for a comment line, "id" for an id alone)."""

    kind: str
    id: str | None = None
    data: Any = None

    @property
    def version(self) -> int:
        assert self.id is not None
        return int(self.id.rpartition(":")[2])


def events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streaming response, as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Event("comment", data=line[1:].strip())
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif "data" in fields:
            yield Event(
                fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])
            )
            fields = {}
        elif "id" in fields:  # no event in a browser, but its next Last-Event-ID
            yield Event("id", fields["id"])
            fields = {}
        else:
            fields = {}  # a retry: line alone


def next_event(stream: Iterator[Event], kind: str = "change") -> Event:
    """The next event of ``kind`` (comments and other kinds skipped)."""
    for event in stream:
        if event.kind == kind:
            return event
    raise AssertionError(f"the stream ended before a {kind!r} event")
