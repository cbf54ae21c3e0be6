"""``statusbridge serve``: run ``statusbridge.web`` with uvicorn on a status location.

starlette and uvicorn are imported only when the command runs, so the rest of the
CLI works without the ``web`` extra. Uvicorn's access log is off: its lines would
carry job ids (the paths) to the terminal.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from typing import TextIO

from statusbridge.cli._render import printable

__all__ = [
    "ENV_TOKEN",
    "HELP",
    "INSTALL_HINT",
    "add_arguments",
    "read_token",
    "serve",
    "unavailable",
]

ENV_TOKEN = "STATUSBRIDGE_TOKEN"
INSTALL_HINT = "pip install starlette uvicorn (the statusbridge[web] extra)"
HELP = "serve the jobs over HTTP: JSON and server-sent events (statusbridge.web)"
DEFAULT_PORT = 8765
_WILDCARDS = ("0.0.0.0", "::", "")


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)"
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the bearer token (default: ${ENV_TOKEN}); needed for cancels, "
        "and to bind to anything but a loopback address",
    )
    serve.add_argument(
        "--root-path", default="", metavar="/PREFIX", help="the prefix a proxy serves it under"
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a name clients may reach the server by (Host header; repeatable; default: "
        "localhost, 127.0.0.1, ::1 and --host)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin whose pages may call the server (CORS; repeatable; default none)",
    )
    serve.add_argument(
        "--batch-dir",
        default=None,
        metavar="LOCATION",
        help="where BatchManager keeps the batch definitions (its batch_dir; default: the "
        "--dir URL, or the folder 'batches' if it exists): a batch cancel then also stops "
        "its jobs not recorded yet",
    )


def unavailable() -> str | None:
    """Why the command cannot run here (one line), or None."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return f"serve needs starlette and uvicorn, which are not installed: {INSTALL_HINT}"
    return None


def read_token(token_file: str | None) -> str | None:
    """The token from ``token_file`` (stripped), else from ``$STATUSBRIDGE_TOKEN``, else None.

    ValueError for an empty one: a token nobody can guess is the point.
    """
    if token_file is not None:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"the token file {token_file!r} is empty")
        return token
    return os.environ.get(ENV_TOKEN, "").strip() or None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1")]
    [True, True, True, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def allowed_hosts(host: str, given: list[str] | None) -> tuple[str, ...]:
    """The ``Host`` names to answer: ``given``, else this machine's names plus ``host``."""
    from statusbridge.web._app import DEFAULT_ALLOWED_HOSTS

    if given:
        return tuple(given)
    extra = () if host in _WILDCARDS or host in DEFAULT_ALLOWED_HOSTS else (host,)
    return (*DEFAULT_ALLOWED_HOSTS, *extra)


def serve(
    location: str,
    host: str,
    port: int,
    out: TextIO,
    *,
    token: str | None,
    root_path: str = "",
    hosts: tuple[str, ...] = (),
    origins: tuple[str, ...] = (),
    batch_dir: str | None = None,
) -> int:
    """Serve until Ctrl-C or SIGTERM; open event streams end at once then."""
    import uvicorn

    from statusbridge.web._app import create_app
    from statusbridge.web._server import WebServer

    app = create_app(
        location, token=token, allowed_hosts=hosts, allow_origins=origins, batch_dir=batch_dir
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, root_path=root_path, lifespan="on"
    )
    server = WebServer(config, app)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}{root_path}/api/jobs"
    auth = "token required" if token else "no token: reads open, cancels refused"
    names = ", ".join(hosts) if hosts else "any"
    print(f"serving {url} for {printable(location)} ({auth}; Host: {names})", file=out)
    out.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
