"""A real redis-server for tests: started on a free port with no persistence, stopped by pid.

Without ``redis-server`` on PATH the tests that need it skip, except where
``CI=true``: there a missing server fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port where connections are refused for as long as the block runs.

    Bound and never listening: the kernel refuses connections to it, and no other
    process (a server a concurrent test run starts) can take it meanwhile, as it could
    a port that was merely free when looked at.
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI=true: the Redis tests must run)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (PEM)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate a CA and the certificates it signs with the ``openssl`` command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (CI=true: the TLS test must run)")
        pytest.skip("openssl is not installed (apt-get install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    # Extensions a strict verifier wants (Python 3.13 turns VERIFY_X509_STRICT on).
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (folder / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-days", "1", "-in", f"{name}.csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext")  # fmt: skip
    return TlsFiles(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


class RedisServer:
    """One redis-server process; ``url(prefix)`` names a location on it.

    With ``tls`` it listens only for TLS and asks clients for a certificate of its CA.
    """

    def __init__(self, port: int | None = None, tls: TlsFiles | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.workdir = Path(tempfile.mkdtemp(prefix="statusbridge-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str = "test") -> str:
        if self.tls is None:
            return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"
        return (
            f"rediss://127.0.0.1:{self.port}/0?prefix={prefix}&ssl_ca_certs={self.tls.ca}"
            f"&ssl_certfile={self.tls.client_cert}&ssl_keyfile={self.tls.client_key}"
        )

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "yes"]  # fmt: skip

    def _answers(self) -> bool:
        """True once the server answers PING (over TLS, with the client certificate, if TLS)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            if self.tls is None:
                raw.sendall(b"PING\r\n")
                return raw.recv(16).startswith(b"+PONG")
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        self.workdir.mkdir(exist_ok=True)  # (stop() removes it)
        self.process = subprocess.Popen(
            [binary, *self._listen_args(), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            last_error: OSError | None = None
            try:
                if self._answers():
                    return self
            except OSError as exc:  # (ssl.SSLError is one)
                last_error = exc
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server on port {self.port} exited: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer in 10 s ({last_error})"
                )
            time.sleep(0.02)  # a poll interval inside a condition wait

    def stop(self) -> None:
        """Kill the server by its pid (SIGKILL: no persistence, nothing to flush)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_empty(self) -> None:
        """Kill it and start a fresh, empty server on the same port."""
        self.stop()
        self.start()
