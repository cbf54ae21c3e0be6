"""Push for Streamlit: a server-sent-events route and a component that reruns its fragment.

No supported API lets a thread rerun a session, so the browser asks for it: the
route is ``statusbridge.web``'s event stream (one ``EventHub`` per cache: resumable
with ``Last-Event-ID``, a bounded queue per client, keep-alive comments), with the
snapshot version as each event's data, and a tiny ``st.components.v2`` component
inside each live fragment sets a trigger value when that version is newer than the
one the fragment last drew, which reruns that fragment only. Nothing reruns while
nothing changes.

A custom route bypasses Streamlit's session checks, so the route has its own: the
``Host`` must be one of ``server.allowedHosts``, and the URL must carry this server's
token, which only reaches a page through its component's arguments (over the page's
own websocket): a page Streamlit did not serve cannot subscribe. The token is drawn per
server process, or taken from ``$STATUSBRIDGE_PUSH_TOKEN`` (several replicas behind one
proxy). Custom routes ignore ``server.baseUrlPath``: the route puts it in its path itself.

Streams end every ``STREAM_SECONDS`` and the browser comes back with its last event id
(nothing is lost): an open stream would otherwise hold up a server that stops without
``end_streams``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from statusbridge.cache import StatusCache
from statusbridge.store._location import absolute_location
from statusbridge.web._events import EventHub
from statusbridge.web._hosts import host_allowed

__all__ = ["EVENTS_PATH", "TOKEN_ENV", "end_streams", "events_path_for", "push_routes"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/statusbridge/events"
STREAM_SECONDS = 10.0
RETRY_MS = 100  # how soon the browser reconnects after a stream ended
TOKEN_ENV = "STATUSBRIDGE_PUSH_TOKEN"

# Locations (absolute folders, or URLs) served by a route in this process, and the URL
# (path and token) the page's component subscribes to.
_served: dict[str, str] = {}
_served_lock = threading.Lock()

# One hub per cache (the server-wide one), each ended when the server stops.
_hubs: dict[int, EventHub] = {}
_hubs_lock = threading.Lock()
_ending = threading.Event()
_token: str | None = None


def _server_token() -> str:
    global _token  # noqa: PLW0603 - one token per server process, by design
    with _hubs_lock:
        if _token is None:
            _token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)
        return _token


def end_streams() -> None:
    """End every open stream now, from any thread: a stopping server waits for them.

    The server's graceful shutdown waits for responses in progress, and a stream would
    otherwise run out its own timer first. Streams opened later end at once.
    """
    with _hubs_lock:
        _ending.set()
        hubs = list(_hubs.values())
    for hub in hubs:
        hub.end_streams()


def events_path_for(folder: str, batch: str | None = None) -> str | None:
    """The URL (path and token) that streams ``folder``'s versions, if this server has one;
    with ``batch``, only those of the changes that concern that batch."""
    with _served_lock:
        url = _served.get(folder)
    return url if url is None or batch is None else f"{url}&batch={quote(batch, safe='')}"


def _hub_for(cache: StatusCache) -> EventHub:
    with _hubs_lock:
        hub = _hubs.get(id(cache))
        if hub is None or hub.cache is not cache:
            hub = _hubs[id(cache)] = EventHub(cache)
        return hub


def _base_url_path() -> str:
    """``server.baseUrlPath`` as a path prefix ("" or "/name")."""
    from streamlit import config

    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def push_routes(
    cache_for: Callable[[], StatusCache],
    folder: str,
    *,
    path: str = EVENTS_PATH,
    allowed_hosts: Callable[[], Sequence[str]] = lambda: (),
) -> Sequence[Any]:
    """Starlette routes for ``st.App(..., routes=...)``: ``path`` streams ``folder``'s versions.

    With ``&batch=<id>`` in the URL (``events_path_for``), only the versions of changes
    that concern that batch (``EventHub.stream``): a fragment that shows one batch.

    ``path`` goes under ``server.baseUrlPath``. ``cache_for`` returns the server-wide
    cache; it is called on the first request, when Streamlit's runtime exists. A request
    whose ``Host`` is not in ``allowed_hosts()`` (read per request; empty: any), or
    without this server's token, gets 403.
    """
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    token = _server_token().encode()
    full_path = _base_url_path() + path

    async def stream(request: Request) -> Response:
        if not host_allowed(request.headers.get("host"), allowed_hosts()):
            return PlainTextResponse("this Host is not allowed (server.allowedHosts)", 403)
        given = request.query_params.get("token", "").encode()
        if not hmac.compare_digest(given, token):
            return PlainTextResponse("this stream is for pages this server served", 403)
        body = _hub_for(cache_for()).stream(
            request.headers.get("last-event-id"),
            request.query_params.get("batch"),
            records=False,
            lifetime=0.0 if _ending.is_set() else STREAM_SECONDS,  # stopping: state, then end
            retry_ms=RETRY_MS,
        )
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    with _served_lock:
        _served[absolute_location(folder)] = f"{full_path}?token={quote(token.decode())}"
    return [Route(full_path, stream, methods=["GET"])]


# The browser side: one EventSource per URL on a page, shared by the live fragments that
# listen to it (the folder's, or one batch's).
# Each mount tells the version its fragment drew; a newer one from the stream sets
# the "change" trigger (at most every `gap` ms), which reruns that fragment only. The
# folder's events name the batches they touched: a fragment following one of them
# reruns first, the folder's fragments once it has drawn.
COMPONENT_JS = """
const WATCHDOG_MS = 400; // a trigger not answered by then was dropped: ask again
const YIELD_MS = 1000; // how long the folder's fragments wait for a batch's to draw first
const batchOf = (url) => {
  const at = url.indexOf('&batch=');
  return at < 0 ? null : decodeURIComponent(url.slice(at + 7).split('&')[0]);
};
export default function (component) {
  const { data, key, setTriggerValue } = component;
  const hub = (window.__statusbridgePush ??= {
    sources: new Map(), newest: new Map(), views: new Map(), n: 0, touchedAt: new Map(),
  });
  const url = data.url;
  let view = hub.views.get(key);
  if (!view) {
    view = { asked: -1, last: 0, timer: null, watchdog: null, waitingBusy: false };
    hub.views.set(key, view);
  }
  // A fragment that now follows another batch (another URL): the old stream is closed
  // once no fragment on the page listens to it.
  const before = view.url;
  if (before !== undefined && before !== url) {
    view.url = url;
    const used = [...hub.views.values()].some((v) => v.mounted && v.url === before);
    if (!used && hub.sources.has(before)) {
      hub.sources.get(before).close();
      hub.sources.delete(before);
      hub.newest.delete(before);
    }
  }
  // Drawn: whatever it asked for is answered (a rerun already under way when the
  // trigger came may have drawn an older version: then it is asked again below).
  Object.assign(view, {
    url, drawn: data.version, asked: data.version, gap: data.gap_ms,
    trigger: setTriggerValue, mounted: true, batch: batchOf(url),
  });
  // One rerun in flight per page (whichever stream each fragment listens to):
  // Streamlit sends the widget updates of two fragments in one batch and reruns only
  // one of them. A drawn fragment wakes every other one.
  const wakeAll = () => {
    for (const v of hub.views.values()) if (v.mounted) v.offer();
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
    // A fragment that follows a batch the change touched goes first (its rows are what a
    // person is looking at); the folder's fragments wait until it drew it, at most 1 s.
    if (view.batch === null) {
      const first = [...hub.views.values()].some((v) => v.mounted && v.batch !== null
        && (hub.touchedAt.get(v.batch) ?? -1) > v.drawn);
      view.yieldSince ??= now;
      if (first && now - view.yieldSince < YIELD_MS) {
        view.waitingBusy = true; // woken (offer) when a fragment is drawn
        view.timer = setTimeout(fire, YIELD_MS - (now - view.yieldSince));
        return;
      }
      view.yieldSince = null;
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
    const seen = (event) => {
      const { version, batches } = JSON.parse(event.data);
      for (const batch of batches ?? []) {
        hub.touchedAt.set(batch, Math.max(hub.touchedAt.get(batch) ?? -1, version));
      }
      hub.newest.set(url, Math.max(hub.newest.get(url) ?? -1, version));
      for (const v of hub.views.values()) if (v.mounted && v.url === url) v.offer();
    };
    source.addEventListener("reset", seen); // the state on (re)connecting
    source.addEventListener("change", seen);
    hub.sources.set(url, source);
  }
  if (hub.busy === view) hub.busy = null; // drawn: the next fragment may go
  wakeAll();
  // Unmounted (or about to be drawn again): stop its timers, keep its rate-limit state.
  return () => {
    clearTimeout(view.timer);
    clearTimeout(view.watchdog);
    view.timer = null;
    view.mounted = false;
    if (hub.busy === view) hub.busy = null;
  };
}
"""
