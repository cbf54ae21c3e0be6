"""``statusbridge metrics``: serve ``/metrics`` for Prometheus from a status location.

prometheus_client is imported only when the command runs, so the rest of the
CLI works without the ``metrics`` extra.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

from statusbridge.cache import StatusCache
from statusbridge.cli._render import printable

__all__ = ["HELP", "INSTALL_HINT", "add_arguments", "serve", "unavailable"]

# statusbridge is installed from a clone (not on PyPI): name what its metrics extra installs.
INSTALL_HINT = "pip install prometheus-client (the statusbridge[metrics] extra)"


HELP = "serve Prometheus metrics at http://HOST:PORT/metrics"

MAX_BATCHES = 1000
"""The most batches ``--batches`` labels: each adds six series to every scrape."""

HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send its request before it is dropped."""


def add_arguments(metrics: argparse.ArgumentParser) -> None:
    metrics.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    metrics.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    metrics.add_argument(
        "--buckets",
        type=_buckets,
        default=None,
        metavar="S,S,...",
        help="upper bounds of the job duration histogram, in seconds (default: 1 s to 4 h)",
    )
    metrics.add_argument(
        "--batches",
        type=int,
        default=0,
        metavar="N",
        help=f"label job counts with their batch, for at most N batches (0 to {MAX_BATCHES};"
        " default 0: no label; the rest are counted under batch '_other')",
    )


def _buckets(text: str) -> tuple[float, ...]:
    """'0.5,1,5' -> (0.5, 1.0, 5.0).

    >>> _buckets("0.5, 1,5")
    (0.5, 1.0, 5.0)
    """
    try:
        bounds = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if not all(0 <= b < float("inf") for b in bounds):
        raise argparse.ArgumentTypeError(f"bounds must be finite and >= 0, got {text!r}")
    return bounds


def unavailable() -> str | None:
    """Why the command cannot run here (one line), or None."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return f"metrics need prometheus-client, which is not installed: {INSTALL_HINT}"
    return None


def serve(
    location: str,
    host: str,
    port: int,
    out: TextIO,
    *,
    batches: int = 0,
    buckets: Sequence[float] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve until ``stop`` is set (or Ctrl-C, which reaches the caller as KeyboardInterrupt)."""
    from prometheus_client import CollectorRegistry

    from statusbridge.metrics import DEFAULT_BUCKETS, StatusCollector

    stop = stop or threading.Event()
    with StatusCache(location) as cache:
        registry = CollectorRegistry()  # only these series: no process or platform collectors
        collector = StatusCollector(
            cache,
            buckets=DEFAULT_BUCKETS if buckets is None else buckets,
            batch_label=batches > 0,
            max_batches=max(1, batches),
        )
        registry.register(collector)
        server, thread = _start_server(host, port, registry)
        try:
            shown = f"[{host}]" if ":" in host else host
            bound_port = server.server_address[1]
            url = f"http://{shown}:{bound_port}/metrics"
            print(f"serving {url} for {printable(location)}", file=out)
            out.flush()
            while not stop.wait(1.0):
                pass
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            collector.close()
    return 0


class _Handler(WSGIRequestHandler):
    # A client that connects and sends nothing would hold its thread (and socket) forever.
    timeout = HEADER_TIMEOUT

    def handle(self) -> None:
        try:
            super().handle()
        except TimeoutError:
            self.close_connection = True  # dropped quietly: a slow or idle client, not an error

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape on stderr is noise for a long-running exporter


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _start_server(
    host: str, port: int, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """prometheus_client's ``start_http_server``, with a timeout for clients that send nothing."""
    from prometheus_client import make_wsgi_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_MetricsServer", (_Server,), {"address_family": family})
    server = server_class((host, port), _Handler)
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="statusbridge-metrics", daemon=True)
    thread.start()
    return server, thread
