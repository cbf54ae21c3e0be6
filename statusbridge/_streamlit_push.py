"""Push for Streamlit: a server-sent-events route and a component that reruns its fragment.

No supported API lets a thread rerun a session, so the browser asks for it: the
route streams the cache's snapshot version (``StatusCache.subscribe`` → the event
loop with ``call_soon_threadsafe``), and a tiny ``st.components.v2`` component
inside each live fragment sets a trigger value when that version is newer than
the one the fragment last drew, which reruns that fragment only. Nothing reruns
while nothing changes.

The route sends version numbers only, never job data, and it has no session or
auth check of its own (a custom route bypasses Streamlit's): bind the server to
127.0.0.1 or put the same proxy auth in front of it as in front of the app.
Custom routes ignore ``server.baseUrlPath``.

Streams end every ``STREAM_SECONDS`` and the browser reconnects: an open stream
would hold up server shutdown until it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.store._location import absolute_location
from statusbridge.web._hosts import host_allowed

__all__ = ["EVENTS_PATH", "end_streams", "events_path_for", "push_routes"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/statusbridge/events"
STREAM_SECONDS = 10.0
RETRY_MS = 100  # how soon the browser reconnects after a stream ended

# Locations (absolute folders, or URLs) served by a route in this process, and the route's path.
_served: dict[str, str] = {}
_served_lock = threading.Lock()


# Open streams, each woken to end when the server stops (see end_streams).
_streams: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
_streams_lock = threading.Lock()
_ending = threading.Event()


def end_streams() -> None:
    """End every open stream now, from any thread: a stopping server waits for them.

    The server's graceful shutdown waits for responses in progress, and a stream would
    otherwise run out its own timer first. Streams opened later end at once.
    """
    with _streams_lock:
        _ending.set()
        streams = list(_streams.items())
    for wake, loop in streams:
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:
            continue  # its loop is closed: that stream is over already


def events_path_for(folder: str) -> str | None:
    """The path of the route that streams ``folder``'s versions, if this server has one."""
    with _served_lock:
        return _served.get(folder)


def _sse(version: int) -> bytes:
    return f"data: {json.dumps({'version': version})}\n\n".encode()


def push_routes(
    cache_for: Callable[[], StatusCache],
    folder: str,
    *,
    path: str = EVENTS_PATH,
    allowed_hosts: Callable[[], Sequence[str]] = lambda: (),
) -> Sequence[Any]:
    """Starlette routes for ``st.App(..., routes=...)``: ``path`` streams ``folder``'s versions.

    ``cache_for`` returns the server-wide cache; it is called on the first request,
    when Streamlit's runtime exists. A request whose ``Host`` is not in ``allowed_hosts()``
    (read per request; empty: any) gets 403, as Streamlit refuses its own page then.
    """
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def stream(request: Request) -> Response:
        if not host_allowed(request.headers.get("host"), allowed_hosts()):
            return PlainTextResponse("this Host is not allowed (server.allowedHosts)", 403)
        cache = cache_for()
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change(snapshot: Snapshot, changed_ids: object) -> None:
            # The cache's thread: hand over to the event loop, never touch it from here.
            loop.call_soon_threadsafe(changed.set)

        async def body() -> AsyncIterator[bytes]:
            unsubscribe = cache.subscribe(on_change)
            with _streams_lock:
                _streams[changed] = loop
            try:
                yield f"retry: {RETRY_MS}\n\n".encode() + _sse(cache.snapshot().version)
                deadline = loop.time() + STREAM_SECONDS
                sent = cache.snapshot().version
                while (left := deadline - loop.time()) > 0 and not _ending.is_set():
                    try:
                        await asyncio.wait_for(changed.wait(), timeout=left)
                    except TimeoutError:
                        break
                    if _ending.is_set():
                        break
                    changed.clear()
                    version = cache.snapshot().version  # the newest: bursts coalesce
                    if version != sent:
                        sent = version
                        yield _sse(version)
            finally:
                with _streams_lock:
                    _streams.pop(changed, None)
                unsubscribe()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    with _served_lock:
        _served[absolute_location(folder)] = path
    return [Route(path, stream, methods=["GET"])]


# The browser side: one EventSource per page, shared by every live fragment on it.
# Each mount tells the version its fragment drew; a newer one from the stream sets
# the "change" trigger (at most every `gap` ms), which reruns that fragment only.
COMPONENT_JS = """
const WATCHDOG_MS = 400; // a trigger not answered by then was dropped: ask again
export default function (component) {
  const { data, key, setTriggerValue } = component;
  const hub = (window.__statusbridgePush ??= {
    sources: new Map(), newest: new Map(), views: new Map(), n: 0,
  });
  const url = data.url;
  let view = hub.views.get(key);
  if (!view) {
    view = { asked: -1, last: 0, timer: null, tick: null, watchdog: null, waitingBusy: false };
    hub.views.set(key, view);
  }
  // Drawn: whatever it asked for is answered (a rerun already under way when the
  // trigger came may have drawn an older version: then it is asked again below).
  Object.assign(view, {
    url, drawn: data.version, asked: data.version, gap: data.gap_ms,
    trigger: setTriggerValue, mounted: true,
  });
  // One rerun in flight per page: Streamlit sends the widget updates of two
  // fragments in one batch and reruns only one of them.
  const wakeAll = () => {
    for (const v of hub.views.values()) if (v.mounted && v.url === url) v.offer();
  };
  const fire = () => {
    view.timer = null;
    view.waitingBusy = false;
    const newest = hub.newest.get(url) ?? -1;
    if (!(newest > view.drawn && newest > view.asked)) return;
    const now = performance.now();
    if (hub.busy && hub.busy !== view && now - hub.busySince < 1000) {
      // Until that rerun is drawn (then offer() wakes this one), at most 1 s.
      view.waitingBusy = true;
      view.timer = setTimeout(fire, 1000 - (now - hub.busySince));
      return;
    }
    hub.busy = view;
    hub.busySince = now;
    view.asked = newest;
    view.last = now;
    view.trigger("change", ++hub.n);
    // A trigger that reached a fragment already rerunning can be dropped: ask again.
    clearTimeout(view.watchdog);
    view.watchdog = setTimeout(() => {
      if (view.mounted && view.drawn < view.asked) {
        view.asked = view.drawn;
        if (hub.busy === view) hub.busy = null;
        wakeAll();
      }
    }, WATCHDOG_MS);
  };
  view.offer = () => {
    if (view.timer && view.waitingBusy && !hub.busy) {
      clearTimeout(view.timer); // it waited for another fragment's rerun: that one is drawn
      view.timer = null;
      view.waitingBusy = false;
    }
    const newest = hub.newest.get(url) ?? -1;
    if (newest <= view.drawn || newest <= view.asked || view.timer) return;
    view.timer = setTimeout(fire, Math.max(0, view.last + view.gap - performance.now()));
  };
  if (!hub.sources.has(url)) {
    const source = new EventSource(url);
    source.onmessage = (event) => {
      const version = JSON.parse(event.data).version;
      hub.newest.set(url, Math.max(hub.newest.get(url) ?? -1, version));
      for (const v of hub.views.values()) if (v.mounted && v.url === url) v.offer();
    };
    hub.sources.set(url, source);
  }
  // Ages and ETAs move while jobs run: redraw now and then even without a write.
  clearTimeout(view.tick);
  if (data.tick_ms > 0) {
    view.tick = setTimeout(() => {
      if (!hub.busy) view.trigger("change", ++hub.n);
    }, data.tick_ms);
  }
  if (hub.busy === view) hub.busy = null; // drawn: the next fragment may go
  wakeAll();
  // Unmounted (or about to be drawn again): stop its timers, keep its rate-limit state.
  return () => {
    clearTimeout(view.timer);
    clearTimeout(view.tick);
    clearTimeout(view.watchdog);
    view.timer = null;
    view.mounted = false;
    if (hub.busy === view) hub.busy = null;
  };
}
"""
