"""Every CLI command takes a redis:// URL as --dir (or $STATUSBRIDGE_DIR); a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_cli

from statusbridge import StatusStore

from support.redis_server import refused_port

pytestmark = pytest.mark.slow  # the command runs in a subprocess, on a real server


def test_every_command_on_a_url(redis_url: str, tmp_path: Path) -> None:
    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Each command in a fresh working directory, to see that it writes nothing there."""
        return subprocess.run(
            [sys.executable, "-m", "statusbridge", *args], cwd=tmp_path, capture_output=True,
            text=True, timeout=60, env={**os.environ, **(env or {})}, check=False,
        )  # fmt: skip

    store = StatusStore(redis_url)
    store.update("a", status="running", progress=0.5, batch_id="b1")
    store.update("old", status="completed")

    listed = cli("ls", "--json", "--dir", redis_url)
    assert listed.returncode == 0, listed.stderr
    assert sorted(doc["id"] for doc in json.loads(listed.stdout)) == ["a", "old"]

    shown = cli("show", "a", env={"STATUSBRIDGE_DIR": redis_url})
    assert shown.returncode == 0 and json.loads(shown.stdout)["progress"] == 0.5

    watched = cli("watch", "--once", "--dir", redis_url)
    assert watched.returncode == 0 and "a" in watched.stdout
    assert "redis://127.0.0.1" in watched.stdout

    cancelled = cli("cancel", "--batch", "b1", "--dir", redis_url)
    assert cancelled.returncode == 0 and "cancel requested: a" in cancelled.stdout
    assert store.read("a").cancel_requested  # type: ignore[union-attr]

    cleaned = cli("cleanup", "--keep", "0", "--dir", redis_url)
    assert cleaned.returncode == 0 and "removed old" in cleaned.stdout
    assert sorted(store.scan()) == ["a"]

    doctor = cli("doctor", "--dir", redis_url)
    assert "change feed: redis backend" in doctor.stdout, doctor.stdout

    simulated = cli("simulate", "--jobs", "2", "--duration", "0.2", "--dir", redis_url)
    assert simulated.returncode == 0, simulated.stderr
    assert len(store.scan()) == 3
    assert os.listdir(tmp_path) == []  # nothing created in the working directory


def test_bad_and_unreachable_urls_are_clear_errors() -> None:
    bad = test_cli.cli("ls", "--dir", "redis://host:port/0")
    assert bad.returncode != 0 and "redis://host:port/0" in bad.stderr
    with refused_port() as port:
        gone = test_cli.cli("ls", "--dir", f"redis://127.0.0.1:{port}/0", timeout=30)
    assert gone.returncode != 0 and "unavailable" in gone.stderr


def test_doctor_and_the_demo_describe_redis_as_redis(redis_url: str) -> None:
    """Issue 22, item 9: doctor said '0 invalid or foreign file(s)' and the demo's caption
    'Workers write one JSON file per job; a watchdog observer ...' on Redis too."""
    from statusbridge.display import backend_text

    StatusStore(redis_url).update("a", status="running")
    doctor = test_cli.cli("doctor", "--dir", redis_url)
    assert "[ok] 0 invalid record(s)" in doctor.stdout, doctor.stdout
    assert "file" not in doctor.stdout.replace("profile", ""), doctor.stdout
    caption = backend_text(redis_url).how_it_works
    assert "Redis" in caption and "JSON file" not in caption and "watchdog" not in caption
    demo = Path(test_cli.__file__).resolve().parents[2] / "demo_app.py"
    assert "backend_text(STATUS_DIR).how_it_works" in demo.read_text()
