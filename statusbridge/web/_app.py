"""``create_app``: the routes of ``statusbridge.web``, and the checks in front of them.

Reads come from the ``StatusCache`` (no I/O on a request), writes go through
``request_cancel`` on a ``StatusStore`` opened on first use, in a worker thread.
Every path the app returns is built from the request's own URL, so the app works
mounted under any prefix (``root_path``).

Nothing here logs a record, a job id or a token: a failed cancel is logged with the
error's type only.
"""

from __future__ import annotations

import heapq
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from statusbridge.cache import BatchSummary, CacheHealth, StatusCache
from statusbridge.errors import StatusBridgeError
from statusbridge.jobs._cancel import request_cancels
from statusbridge.jobs._definition import BatchDefinition
from statusbridge.jobs._definitions import mark_batch_cancelled
from statusbridge.jobs._unrecorded import cancel_unrecorded_at
from statusbridge.record import BatchJob, BatchStatus, validate_job_id
from statusbridge.record._codec import job_to_dict
from statusbridge.record._model import utc_now
from statusbridge.store import StatusStore
from statusbridge.store._location import is_url
from statusbridge.web._events import EventHub
from statusbridge.web._hosts import host_allowed

__all__ = ["DEFAULT_ALLOWED_HOSTS", "create_app", "end_streams"]

logger = logging.getLogger(__name__)

DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_Endpoint = Callable[[Request], Awaitable[Response]]
_STATUSES = {status.value: status for status in BatchStatus}


def create_app(
    location: str | os.PathLike[str] = "batch_status",
    *,
    cache: StatusCache | None = None,
    token: str | None = None,
    allowed_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
    allow_origins: Sequence[str] = (),
    batch_dir: str | os.PathLike[str] | None = None,
) -> Starlette:
    """An ASGI app (Starlette) that serves the jobs at ``location`` as JSON and server-sent events.

    Mount it under any prefix (``app.mount("/status", create_app(...))``) or run it
    with any ASGI server. Pass ``cache`` to share a ``StatusCache`` you own;
    otherwise the app opens one, closed when the app's lifespan ends.

    Args:
        location: a folder or a URL, as ``StatusCache`` takes it.
        cache: a cache on the same location, to share.
        token: with one, every route but ``/healthz`` needs ``Authorization: Bearer
            <token>`` (401 otherwise); without one, reads are open and the cancel
            routes answer 403.
        allowed_hosts: the names a request's ``Host`` header may carry (port ignored;
            ``*.example.com`` for subdomains, ``*`` for any): others get 400, which
            stops DNS rebinding against a server on this machine.
        allow_origins: the origins whose pages may call the app from a browser
            (CORS); none by default.
        batch_dir: where a ``BatchManager`` keeps the batch definitions (its
            ``batch_dir``): a batch cancel then sets the batch's cancel marker first,
            so its jobs not recorded yet never start either. Default: ``location``
            when it is a URL (a manager keeps them there), none for a folder.
    """
    owned = cache is None
    followed = StatusCache(location) if cache is None else cache
    hub = EventHub(followed)
    if batch_dir is None and is_url(location):
        batch_dir = location
    routes = _Routes(location, followed, hub, token, batch_dir)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            hub.close()
            routes.close()
            if owned:
                followed.close()

    app = Starlette(
        routes=routes.table(),
        middleware=[
            Middleware(_HostCheck, allowed=tuple(allowed_hosts)),
            Middleware(
                CORSMiddleware,
                allow_origins=list(allow_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Last-Event-ID"],
            ),
        ],
        lifespan=lifespan,
    )
    app.state.statusbridge_hub = hub
    return app


def end_streams(app: Starlette) -> None:
    """End the app's open event streams (from any thread): a stopping server waits for them."""
    hub: EventHub = app.state.statusbridge_hub
    hub.end_streams()


class _HostCheck:
    """400 for a request whose ``Host`` is not one of the allowed names (DNS rebinding)."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            text = None if host is None else host.decode("latin-1")
            if not host_allowed(text, self.allowed):
                response = PlainTextResponse("this Host is not allowed", 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _by_id(job: BatchJob) -> str:
    return job.id


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers or None)


def _summary_doc(summary: BatchSummary, url: str) -> dict[str, Any]:
    return {
        "id": summary.id,
        "total": summary.total,
        "counts": {status.value: n for status, n in summary.counts.items()},
        "state": summary.state,
        "progress": summary.progress,
        "completed_share": summary.completed_share,
        "eta_seconds": summary.eta(),
        "jobs": url,
    }


def _health_doc(health: CacheHealth, full: bool) -> dict[str, Any]:
    """The cache's health; without ``full`` (no valid token given) no file names or paths."""
    doc: dict[str, Any] = {
        "running": health.running,
        "backend": health.backend,
        "version": health.version,
        "jobs": health.jobs,
        "events": health.events,
        "rescans": health.rescans,
        "last_event_at": None if health.last_event_at is None else health.last_event_at.isoformat(),
        "invalid_records": len(health.invalid_files),
        "observer_restarts": health.observer_restarts,
    }
    if full:
        doc |= {
            "invalid_files": dict(health.invalid_files),
            "directory": health.directory,
            "directory_present": health.directory_present,
            "last_error": health.last_error,
            "backend_note": health.backend_note,
        }
    return doc


class _Routes:
    """The endpoints, over one cache, one hub and (for cancels) one store opened on first use."""

    def __init__(
        self,
        location: str | os.PathLike[str],
        cache: StatusCache,
        hub: EventHub,
        token: str | None,
        batch_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.location = location
        self.batch_dir = batch_dir
        self.cache = cache
        self.hub = hub
        self.token = None if token is None else token.encode()
        self._store: StatusStore | None = None
        self._store_lock = threading.Lock()

    def table(self) -> list[Route]:
        read = self._guarded

        def write(endpoint: _Endpoint) -> _Endpoint:
            return self._guarded(endpoint, write=True)

        return [
            Route("/api/jobs", read(self.jobs), name="jobs"),
            Route("/api/jobs/{job_id}", read(self.job), name="job"),
            Route(
                "/api/jobs/{job_id}/cancel",
                write(self.cancel_job),
                methods=["POST"],
                name="cancel_job",
            ),
            Route("/api/batches", read(self.batches), name="batches"),
            Route("/api/batches/{batch_id}", read(self.batch), name="batch"),
            Route(
                "/api/batches/{batch_id}/cancel",
                write(self.cancel_batch),
                methods=["POST"],
                name="cancel_batch",
            ),
            Route("/api/events", read(self.events), name="events"),
            Route("/healthz", self.healthz, name="healthz"),
        ]

    def close(self) -> None:
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- auth ------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        """Whether the request carries the token (compared in constant time)."""
        if self.token is None:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token)

    def _refusal(self, request: Request, *, write: bool) -> Response | None:
        if self.token is None:
            if write:
                return _error(403, "writes need a token: start the server with one")
            return None
        if not self._authorized(request):
            return _error(401, "missing or wrong token", **{"WWW-Authenticate": "Bearer"})
        return None

    def _guarded(self, endpoint: _Endpoint, *, write: bool = False) -> _Endpoint:
        async def guarded(request: Request) -> Response:
            return self._refusal(request, write=write) or await endpoint(request)

        return guarded

    # -- reads -----------------------------------------------------------------------
    async def jobs(self, request: Request) -> Response:
        """A page of jobs by id: ``?batch=``, ``?status=`` (repeatable), ``?limit=``, ``?cursor=``
        (the last id of the page before)."""
        query = request.query_params
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        wanted = query.getlist("status")
        unknown = [s for s in wanted if s not in _STATUSES]
        if unknown:
            return _error(400, f"unknown status; one of {', '.join(_STATUSES)}")
        statuses = {_STATUSES[s] for s in wanted}
        snap = self.cache.snapshot()
        batch = query.get("batch")
        found: Sequence[BatchJob] = snap.batch(batch) if batch else tuple(snap.values())
        cursor = query.get("cursor", "")
        # One more than the page, to know whether there is a next one: O(n log limit), not a
        # sort of every job on each page.
        chosen = heapq.nsmallest(
            limit + 1,
            (j for j in found if j.id > cursor and (not statuses or j.status in statuses)),
            key=_by_id,
        )
        page = chosen[:limit]
        more = len(chosen) > limit
        next_url = str(request.url.include_query_params(cursor=page[-1].id)) if more else None
        return JSONResponse(
            {"version": snap.version, "jobs": [job_to_dict(j) for j in page], "next": next_url}
        )

    async def job(self, request: Request) -> Response:
        job = self.cache.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "no such job")
        return JSONResponse(job_to_dict(job))

    def _batch_url(self, request: Request, batch_id: str) -> str:
        return str(request.url_for("jobs").include_query_params(batch=batch_id))

    async def batches(self, request: Request) -> Response:
        snap = self.cache.snapshot()
        docs = [
            _summary_doc(snap.summary(b), self._batch_url(request, b)) for b in snap.batch_ids()
        ]
        return JSONResponse({"version": snap.version, "batches": docs})

    async def batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        summary = self.cache.snapshot().summary(batch_id)
        if summary.total == 0:
            return _error(404, "no such batch (no job names it)")
        return JSONResponse(_summary_doc(summary, self._batch_url(request, batch_id)))

    async def events(self, request: Request) -> Response:
        stream = self.hub.stream(
            request.headers.get("last-event-id"), request.query_params.get("batch")
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def healthz(self, request: Request) -> Response:
        health = self.cache.health()
        doc = _health_doc(health, full=self.token is None or self._authorized(request))
        return JSONResponse(doc, 200 if health.running else 503)

    # -- writes ------------------------------------------------------------------------
    def _cancel(self, job_ids: Sequence[str], *, unrecorded: bool = False) -> list[str]:
        """``request_cancel`` for each (on a worker thread: it reads and writes the store);
        ``unrecorded``: also a started batch's job with no record yet (``batch_dir``)."""
        with self._store_lock:
            if self._store is None:
                self._store = StatusStore(self.location)
            store = self._store
        asked = request_cancels(store, job_ids)
        if unrecorded and self.batch_dir is not None:
            rest = [job_id for job_id in job_ids if job_id not in asked]
            asked += [j for j in rest if cancel_unrecorded_at(store, self.batch_dir, j)]
        return asked

    async def _cancelled(
        self, job_ids: Sequence[str], *, unrecorded: bool = False
    ) -> list[str] | Response:
        try:
            return await run_in_threadpool(partial(self._cancel, job_ids, unrecorded=unrecorded))
        except (StatusBridgeError, OSError, ValueError) as exc:
            logger.warning("statusbridge.web: cancel failed (%s)", type(exc).__name__)
            return _error(503, "the status store refused the cancel")

    async def cancel_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            validate_job_id(job_id)
        except ValueError:
            return _error(404, "no such job")
        asked = await self._cancelled([job_id], unrecorded=True)
        if isinstance(asked, Response):
            return asked
        if not asked and self.cache.get(job_id) is None:
            return _error(404, "no such job")
        return JSONResponse({"id": job_id, "cancel_requested": bool(asked)})

    def _mark_cancelled(self, batch_id: str) -> BatchDefinition | None:
        """The batch's cancel marker first (worker thread): its feeder then starts none
        of the jobs it has not recorded yet."""
        if self.batch_dir is None:
            return None
        return mark_batch_cancelled(batch_id, self.batch_dir, utc_now())

    async def cancel_batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        try:
            definition = await run_in_threadpool(self._mark_cancelled, batch_id)
        except (StatusBridgeError, OSError, ValueError) as exc:
            logger.warning("statusbridge.web: batch cancel failed (%s)", type(exc).__name__)
            return _error(503, "the batch definitions refused the cancel")
        snap = self.cache.snapshot()
        members = snap.batch(batch_id)
        if not members and definition is None:
            return _error(404, "no such batch (no job names it)")
        asked = await self._cancelled(sorted(j.id for j in members if not j.is_finished))
        if isinstance(asked, Response):
            return asked
        unrecorded = 0
        if definition is not None and definition.cancelled_at and definition.final is None:
            unrecorded = sum(snap.get(job_id) is None for job_id in definition.job_ids)
        doc = {"id": batch_id, "cancel_requested": asked, "not_recorded_stopped": unrecorded}
        return JSONResponse(doc)
