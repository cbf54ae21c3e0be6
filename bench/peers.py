"""The alternatives statusbridge is measured against, written the way an application would.

Each peer has a writer side (one update of one job) and a UI side (a "render":
read every job's status once). Writers for the latency runs live here too, at
module level, so a spawned process can run them.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import time
from pathlib import Path
from typing import Any

from statusbridge import StatusStore
from statusbridge.store.folder._atomic import write_atomic

# -- seed-style files: write in place, lock, dump; the UI opens, locks and parses every file.


def seed_write(folder: Path, job_id: str, doc: dict[str, Any]) -> None:
    with open(folder / f"{job_id}.json", "w", encoding="utf-8") as f:  # truncates before locking
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        json.dump(doc, f)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def seed_render(folder: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Every job's document, and how many reads were torn (empty or half-written)."""
    jobs: dict[str, dict[str, Any]] = {}
    torn = 0
    for path in folder.glob("*.json"):
        try:
            with open(path, encoding="utf-8") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                jobs[path.stem] = json.load(f)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        except json.JSONDecodeError:
            torn += 1
        except FileNotFoundError:
            continue
    return jobs, torn


# -- SQLite: one row per job in a WAL database; the UI runs a SELECT per render.

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, progress REAL, "
    "message TEXT, t REAL, seq INTEGER)"
)


def sqlite_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    return conn


def sqlite_write(
    conn: sqlite3.Connection, job_id: str, progress: float, t: float, seq: int = 0
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO jobs VALUES (?, 'running', ?, 'working', ?, ?)",
        (job_id, progress, t, seq),
    )


def sqlite_render(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id, status, progress, message, t, seq FROM jobs").fetchall()


# -- in-process queue: workers put updates, the UI drains them into a dict (threads only).


def queue_render(q: queue.SimpleQueue[tuple[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    while True:
        try:
            job_id, doc = q.get_nowait()
        except queue.Empty:
            return state
        state[job_id] = doc


# -- writers for the latency runs (run in a spawned process) ----------------------------------


def _paced(rate: float, duration: float):  # type: ignore[no-untyped-def]
    """Yield at ``rate`` per second for ``duration`` seconds, sleeping in between."""
    interval = 1.0 / rate
    start = time.perf_counter()
    n = int(rate * duration)
    for i in range(n):
        target = start + i * interval
        while (delay := target - time.perf_counter()) > 0:
            time.sleep(delay)
        yield i


def latency_writer(kind: str, target: str, rate: float, duration: float, ready: str) -> None:
    """Write ``rate`` updates/s of job "lat" for ``duration`` s; each carries its number ``i``.

    When done, the write times are saved to ``ready + ".times"``, so the reader
    can tell for every write when it first became visible (polling readers
    skip intermediate values, which are still late, not free).
    """
    path = Path(target)
    times: list[float] = []
    if kind == "statusbridge":
        store = StatusStore(path)
        store.update("lat", meta={"i": -1})
        Path(ready).touch()
        for i in _paced(rate, duration):
            times.append(time.time())
            store.update("lat", progress=(i % 100) / 100, meta={"i": i})
    elif kind in ("watchdog", "watchdog-beside"):
        temp_dir = path / ".tmp" if kind == "watchdog" else None
        Path(ready).touch()
        for i in _paced(rate, duration):
            times.append(time.time())
            write_atomic(path / "lat.json", json.dumps({"i": i}).encode(), temp_dir=temp_dir)
    elif kind == "seed":
        seed_write(path, "lat", {"i": -1})
        Path(ready).touch()
        for i in _paced(rate, duration):
            times.append(time.time())
            seed_write(path, "lat", {"i": i, "progress": (i % 100) / 100})
    elif kind == "sqlite":
        conn = sqlite_connect(path)
        sqlite_write(conn, "lat", 0.0, 0.0, -1)
        Path(ready).touch()
        for i in _paced(rate, duration):
            times.append(time.time())
            sqlite_write(conn, "lat", (i % 100) / 100, 0.0, i)
    else:
        raise ValueError(kind)
    Path(ready + ".times").write_text(json.dumps(times))


def burst_writer(folder: str, n: int, ready: str, go: str) -> None:
    """Prepare ``n`` records in a sibling folder, then rename them all into ``folder`` at once."""
    target = Path(folder)
    staging = target.with_name(target.name + "-staging")
    store = StatusStore(staging)
    for i in range(n):
        store.update(f"burst-{i}", progress=0.0)
    Path(ready).touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(n):
        os.rename(staging / f"burst-{i}.json", target / f"burst-{i}.json")
