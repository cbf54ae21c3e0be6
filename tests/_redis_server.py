"""A real redis-server for tests: started on a free port with no persistence, stopped by pid.

Without ``redis-server`` on PATH the tests that need it skip, except where
``CI=true``: there a missing server fails the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _ports() -> range:
    """This project's port range; ``STATUSBRIDGE_TEST_PORTS=16700-16799`` picks another
    (several checkouts running their suites side by side on one machine)."""
    text = os.environ.get("STATUSBRIDGE_TEST_PORTS", "16300-16399")
    low, _, high = text.partition("-")
    return range(int(low), int(high) + 1)


PORTS = _ports()


def free_port(skip: frozenset[int] = frozenset()) -> int:
    """A port of PORTS that nothing listens on (bind to check), not one of ``skip``."""
    start = os.getpid() % len(PORTS)
    for offset in range(len(PORTS)):
        port = PORTS[(start + offset) % len(PORTS)]
        if port in skip:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI=true: the Redis tests must run)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return found


class RedisServer:
    """One redis-server process; ``url(prefix)`` names a location on it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="statusbridge-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str = "test") -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server on port {self.port} exited: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer in 10 s")
            time.sleep(0.02)  # a poll interval inside a condition wait

    def stop(self) -> None:
        """Kill the server by its pid (SIGKILL: no persistence, nothing to flush)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart_empty(self) -> None:
        """Kill it and start a fresh, empty server on the same port."""
        self.stop()
        self.start()
