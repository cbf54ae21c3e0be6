"""``statusbridge.web``: the jobs of a status location over HTTP, for any web stack.

``create_app(location)`` returns an ASGI app (Starlette): JSON routes for jobs and
batches, a server-sent-events stream of changes that a client resumes with
``Last-Event-ID``, cancel routes behind a bearer token, and ``/healthz``. Mount it
in FastAPI, Django (ASGI) or any Starlette app, or run it with ``statusbridge serve``.
Needs the ``web`` extra (starlette; uvicorn for ``serve``); the core never imports it.
"""

from statusbridge.web._app import create_app

__all__ = ["create_app"]
