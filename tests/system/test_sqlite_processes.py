"""The sqlite:// backend with real processes: killed writers, a frozen cache, a read-only
mount, a process pool, and the command-line tools pointed at a sqlite:// URL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusbridge import BatchManager, BatchStatus, StatusCache, StatusStore

from support.processes import child_env, popen
from support.waiting import wait_until

pytestmark = pytest.mark.slow

# Writes forever; prints each acknowledged seq, and "in" once it is inside a transaction
# that it then holds (modify's change runs between BEGIN IMMEDIATE and COMMIT).
KILLED_WRITER = """
import sys, time
from statusbridge import StatusStore
store = StatusStore(sys.argv[1])
hold_at = int(sys.argv[2])
def change(current):
    n = current.meta.get("n", 0) + 1 if current else 1
    if n == hold_at:
        print("in", flush=True)
        time.sleep(60)  # killed here, mid-transaction
    return {"meta": {"n": n}, "progress": (n % 100) / 100}
while True:
    job = store.modify("counter", change)
    print(job.seq, flush=True)
"""


@pytest.mark.parametrize("hold_at", [150, 0])
def test_sigkill_mid_transaction_loses_no_acknowledged_write(tmp_path: Path, hold_at: int) -> None:
    """hold_at 150: killed inside a held BEGIN IMMEDIATE; 0: killed wherever it is."""
    url = f"sqlite:///{tmp_path}/status.db"
    writer = popen([sys.executable, "-c", KILLED_WRITER, url, str(hold_at)],
                   stdout=subprocess.PIPE, text=True, env=child_env())  # fmt: skip
    assert writer.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = writer.stdout.readline().strip()
        if line == "in" or (hold_at == 0 and acknowledged >= 300):
            break
        acknowledged = int(line)
    writer.send_signal(signal.SIGKILL)
    writer.wait(30)
    writer.stdout.close()
    assert acknowledged >= (hold_at - 1 if hold_at else 300)
    with contextlib.closing(sqlite3.connect(tmp_path / "status.db")) as conn, conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with StatusStore(url) as store:
        job = store.read("counter")
        assert job is not None and job.seq >= acknowledged and job.meta["n"] == job.seq
        assert store.update("counter", progress=1.0).seq == job.seq + 1  # not locked by the dead


# Follows the database and rewrites a report file after every change.
FOLLOWER = """
import json, os, sys, time
from statusbridge import StatusCache
cache = StatusCache(sys.argv[1])
report = sys.argv[2]
def write(snapshot, changed):
    h = cache.health()
    doc = {"ids": sorted(snapshot), "note": h.backend_note, "reloads": h.observer_restarts}
    with open(report + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(report + ".tmp", report)
cache.subscribe(write)
write(cache.snapshot(), frozenset())
time.sleep(120)
"""


def test_a_stopped_cache_finds_the_log_trimmed_past_it_and_reloads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    report = tmp_path / "report.json"
    store = StatusStore(url, log_keep=5)
    store.update("before")
    follower = popen([sys.executable, "-c", FOLLOWER, url, str(report)], env=child_env())
    try:
        wait_until(lambda: report.exists() and "before" in json.loads(report.read_text())["ids"],
                   30, "the follower's first load")  # fmt: skip
        follower.send_signal(signal.SIGSTOP)
        for i in range(30):
            store.update(f"while-stopped-{i}", status="completed")
        store.delete("before")
        follower.send_signal(signal.SIGCONT)

        def caught_up() -> dict[str, object] | None:
            doc: dict[str, object] = json.loads(report.read_text())
            ids = doc["ids"]
            assert isinstance(ids, list)
            return doc if "while-stopped-29" in ids and "before" not in ids else None

        doc = wait_until(caught_up, 30, "the follower to reload")
        assert doc is not None
        assert doc["reloads"] == 1
        assert "trimmed past position" in str(doc["note"])
        assert len(doc["ids"]) == 30  # type: ignore[arg-type]  # (a list: caught_up checked)
    finally:
        follower.send_signal(signal.SIGCONT)
        follower.kill()
        follower.wait(30)
        store.close()


@pytest.fixture
def read_only_copy(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a writable folder, the same folder mounted read-only elsewhere)."""
    source, mounted = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mounted)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr!r}")
    try:
        yield source, mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


def test_a_read_only_database_gives_a_working_monitor(read_only_copy: tuple[Path, Path]) -> None:
    source, mounted = read_only_copy
    with StatusStore(f"sqlite:///{source}/status.db") as writer:
        writer.update("a", status="running", progress=0.5)
        writer.update("b", status="completed")
    url = f"sqlite:///{mounted}/status.db"
    with StatusCache(url) as cache:
        assert sorted(cache.snapshot()) == ["a", "b"]
        assert "read-only" in (cache.health().backend_note or "")
    with StatusStore(url) as reader:
        assert reader.read("a") is not None and reader.read("a").progress == 0.5  # type: ignore[union-attr]
        with pytest.raises(PermissionError, match=f"{mounted}/status.db.*read-only"):
            reader.update("a", progress=0.6)
    listed = subprocess.run([sys.executable, "-m", "statusbridge", "ls", "--json", "--dir", url],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["id"] for d in json.loads(listed.stdout)) == ["a", "b"]


def square(params: dict[str, int]) -> int:
    return params["x"] ** 2


def test_batch_manager_end_to_end_with_a_process_pool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    with BatchManager(status_dir=url, max_concurrent=2, executor="process") as manager:
        batch_id = manager.create_custom_batch([{"x": i} for i in range(8)], "squares")
        manager.start_batch(batch_id, square)
        summary = wait_until(
            lambda: (s := manager.get_batch_status(batch_id)) and s.state == "completed" and s,
            90, "the batch to finish",
        )  # fmt: skip
        assert summary and summary.counts[BatchStatus.COMPLETED] == 8
        results = sorted(j.result for j in manager.get_batch_jobs(batch_id))
        assert results == [i * i for i in range(8)]
    assert os.listdir(tmp_path) == ["status.db"] or set(os.listdir(tmp_path)) <= {
        "status.db", "status.db-wal", "status.db-shm"}  # fmt: skip
    with (
        contextlib.closing(sqlite3.connect(tmp_path / "status.db")) as conn,
        conn,
    ):  # the definition sits next to the jobs
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1


def test_every_cli_command_and_metrics_on_a_sqlite_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/status.db"
    work = tmp_path / "cwd"
    work.mkdir()

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statusbridge", *args], cwd=work, capture_output=True,
            text=True, timeout=60, env=child_env(**(env or {})), check=False,
        )  # fmt: skip

    store = StatusStore(url)
    store.update("a", status="running", progress=0.5, batch_id="b1")
    store.update("old", status="completed")
    listed = cli("ls", "--json", "--dir", url)
    assert listed.returncode == 0, listed.stderr
    assert sorted(doc["id"] for doc in json.loads(listed.stdout)) == ["a", "old"]
    shown = cli("show", "a", env={"STATUSBRIDGE_DIR": url})
    assert shown.returncode == 0 and json.loads(shown.stdout)["progress"] == 0.5
    watched = cli("watch", "--once", "--dir", url)
    assert watched.returncode == 0 and "a" in watched.stdout
    cancelled = cli("cancel", "--batch", "b1", "--dir", url)
    assert cancelled.returncode == 0 and "cancel requested: a" in cancelled.stdout
    assert store.read("a").cancel_requested  # type: ignore[union-attr]
    cleaned = cli("cleanup", "--keep", "0", "--dir", url)
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(store.scan()) == ["a"]
    doctor = cli("doctor", "--dir", url)
    assert "sqlite backend" in doctor.stdout, doctor.stdout
    # --fail-rate 0: /metrics below counts exactly one failed job.
    simulated = cli(
        "simulate", "--jobs", "2", "--duration", "0.2", "--fail-rate", "0", "--dir", url
    )
    assert simulated.returncode == 0, simulated.stderr
    assert len(store.scan()) == 3
    assert os.listdir(work) == []  # nothing made in the working directory
    relative = cli("ls", "--json", "--dir", "sqlite:///../status.db")  # from the working dir
    assert relative.returncode == 0 and len(json.loads(relative.stdout)) == 3

    server = popen([sys.executable, "-u", "-m", "statusbridge", "metrics", "--dir", url,
                    "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   env=child_env())  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        store.update("late", status="failed", error_message="boom")

        def scraped() -> str | None:
            with urllib.request.urlopen(line.split()[1], timeout=30) as response:
                text: str = response.read().decode()
            return text if 'statusbridge_jobs{status="failed"} 1.0' in text else None

        text = wait_until(scraped, 30, "the late failure in /metrics")
        assert text is not None
        assert 'statusbridge_jobs{status="running"} 1.0' in text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=60)
        finally:
            server.kill()
            server.wait(30)
        store.close()
