"""``statusbridge serve`` as a real process, 200 stream clients at once, and the example page in
headless Chromium showing a write from another process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statusbridge import StatusStore

from support.browser import HAVE_CHROMIUM, NO_CHROMIUM, chromium
from support.processes import child_env, popen
from support.redis_server import free_port
from support.waiting import wait_until
from support.web import events, next_event

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-token-for-the-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def statusbridge(*args: str) -> list[str]:
    return [sys.executable, "-m", "statusbridge", *args]


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = child_env()
    env.pop("STATUSBRIDGE_TOKEN", None)
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        done = subprocess.run(
            statusbridge("--dir", str(tmp_path), "serve", "--host", host, "--port", "0"),
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert "without a token" in lines[0]
    empty = tmp_path / "token"
    empty.write_text("\n")
    done = subprocess.run(
        statusbridge("--dir", str(tmp_path), "serve", "--token-file", str(empty)),
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "empty" in done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``statusbridge serve`` with a token, on a free port; (base URL, process, folder)."""
    folder = tmp_path / "batch_status"
    folder.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    args = ["--dir", str(folder), "serve", "--port", str(port), "--token-file", str(token_file)]
    proc = popen(
        statusbridge(*args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving http://127.0.0.1:{port}/api/jobs"), line
        yield f"http://127.0.0.1:{port}", proc, folder
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_serves_and_stops_with_a_stream_open(
    served: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, proc, folder = served
    with StatusStore(folder) as store:
        store.update("secret-job", status="running", message="secret message")
    wait_until(lambda: httpx.get(f"{base}/api/jobs/secret-job", headers=AUTH).status_code == 200)
    assert httpx.get(f"{base}/api/jobs").status_code == 401
    assert httpx.get(f"{base}/healthz").json()["running"] is True
    with httpx.stream("GET", f"{base}/api/events", headers=AUTH, timeout=30) as response:
        stream = events(response)
        assert next_event(stream, "reset").data["jobs"][0]["id"] == "secret-job"
        proc.send_signal(signal.SIGINT)
        # The server ends the open stream itself, instead of waiting for the client to leave.
        assert list(stream) == []
    assert proc.wait(30) == 130  # interrupted, as every command
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "Traceback" not in log
    assert "secret" not in log  # no access log: the paths carry job ids


def test_two_hundred_stream_clients(served: tuple[str, subprocess.Popen[str], Path]) -> None:
    """200 clients at once (on loopback): each gets the state, then the same change."""
    base, _proc, folder = served
    clients = 200

    async def one(client: httpx.AsyncClient, ready: asyncio.Queue[int]) -> int:
        async with client.stream("GET", f"{base}/api/events", headers=AUTH) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line == "event: reset":
                    await ready.put(1)
                elif line == "event: change":
                    async for data in lines:
                        return int('"message":"go"' in data)
        return 0

    async def run() -> int:
        limits = httpx.Limits(max_connections=clients + 10)
        ready: asyncio.Queue[int] = asyncio.Queue()
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            tasks = [asyncio.create_task(one(client, ready)) for _ in range(clients)]
            for _ in range(clients):
                await ready.get()
            with StatusStore(folder) as store:
                await asyncio.to_thread(store.update, "all", message="go")
            return sum(await asyncio.gather(*tasks))

    assert asyncio.run(run()) == clients


def test_serve_under_a_root_path(tmp_path: Path) -> None:
    """Behind a proxy that strips ``/status``: the links the server returns keep it."""
    folder = tmp_path / "batch_status"
    with StatusStore(folder) as store:
        store.update("a", batch_id="b")
        store.update("b", batch_id="b")
    port = free_port()
    args = ["--dir", str(folder), "serve", "--port", str(port), "--root-path", "/status"]
    proc = popen(statusbridge(*args), stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None
        assert f":{port}/status/api/jobs" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{base}/api/jobs?limit=1").json()
        assert page["next"].startswith(f"{base}/status/api/jobs?")
        assert httpx.get(f"{base}/api/batches/b").json()["jobs"].startswith(f"{base}/status/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


# -- the example page in a browser ----------------------------------------------------------


def run_writer(folder: Path, call: str) -> None:
    """``StatusStore(folder).<call>`` in another process."""
    code = f"import sys; from statusbridge import StatusStore; StatusStore(sys.argv[1]).{call}"
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, timeout=60)


@pytest.mark.skipif(not HAVE_CHROMIUM and not os.environ.get("CI"), reason=NO_CHROMIUM)
@pytest.mark.timeout(300)
def test_example_page_shows_a_write_from_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "batch_status"
    folder.mkdir()
    port = free_port()
    app = popen(
        [sys.executable, str(ROOT / "examples" / "fastapi_app.py"), "--port", str(port)],
        cwd=tmp_path, env=child_env(STATUSBRIDGE_DIR=str(folder)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/status/healthz").status_code == 200
            except httpx.TransportError:
                assert app.poll() is None, "the example app exited"
                return False

        wait_until(up, timeout=60, message="the example app")
        with chromium(tmp_path / "chrome-profile") as driver:
            driver.get(f"{base}/")

            def text() -> str:
                return str(driver.execute_script("return document.body.innerText"))

            wait_until(lambda: "0 job(s), live" in text(), timeout=60, message="the first state")
            run_writer(folder, "update('from-elsewhere', status='running', message='elsewhere')")
            wait_until(lambda: "elsewhere" in text(), timeout=60, message="the row")
            assert "1 job(s), live" in text()
            run_writer(folder, "update('from-elsewhere', status='completed')")
            wait_until(lambda: "completed" in text(), timeout=60, message="the completed row")
            run_writer(folder, "delete('from-elsewhere')")
            wait_until(lambda: "0 job(s), live" in text(), timeout=60, message="the row to go")
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(30)
        assert app.stderr is not None
        log = app.stderr.read()
        app.stderr.close()
    assert "Traceback" not in log, log
