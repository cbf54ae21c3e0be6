"""SQLite backend figures (``python -m bench --only sqlite``), each against a floor of the same run.

- the cost of one ``update()`` against a bare ``BEGIN IMMEDIATE; UPSERT; COMMIT`` on the
  same database settings (goal: <= 2x), and against ``update()`` on a folder (goal: <= 0.2x);
- write -> visible from another process: SqliteStore.update -> SqliteCache subscriber,
  against a bare watchdog observer on the database's folder + ``SELECT ... WHERE pos > ?``
  (goal: p99 <= 3x);
- the initial load of N records (``StatusCache``) against the folder floor
  (scandir + read + json.loads of N files) (goal: <= 0.5x);
- the ``-wal`` file's size after N updates with a cache attached (goal: bounded).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from statusbridge import BatchJob, Snapshot, StatusCache, StatusStore
from statusbridge.record._codec import job_text
from statusbridge.record._model import utc_now

__all__ = ["bench_sqlite"]

FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rmw_log (pos INTEGER PRIMARY KEY, id TEXT NOT NULL);
"""
UPSERT = "INSERT INTO t(id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc"


def _floor_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(FLOOR_SCHEMA)
    return conn


# -- child processes (module level: spawn imports them) ---------------------------------------


def paced_writer(kind: str, location: str, rate: float, duration: float, ready: str) -> None:
    """Write at ``rate`` for ``duration`` s; the write times go to ``ready``.times."""
    if kind == "statusbridge":
        store = StatusStore(location)
        store.update("lat", progress=0.0)

        def write(i: int) -> None:
            store.update("lat", meta={"i": i})
    else:
        conn = _floor_db(Path(location))

        def write(i: int) -> None:
            conn.execute("INSERT INTO log(id) VALUES (?)", (str(i),))

    Path(ready).touch()
    time.sleep(0.3)  # the reader settles (pacing, not a wait for state)
    start = time.perf_counter()
    times: list[float] = []
    for i in range(int(rate * duration)):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        times.append(time.time())
        write(i)
    Path(ready + ".times").write_text(json.dumps(times))


def _latency(kind: str, location: str, rate: float, duration: float) -> list[float]:
    import multiprocessing as mp

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    from bench.run import _latencies

    seen: list[tuple[float, int]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-sqlat-"))
    ready = tmp / "ready"
    proc = mp.get_context("spawn").Process(
        target=paced_writer, args=(kind, location, rate, duration, str(ready))
    )
    if kind == "statusbridge":
        cache = StatusCache(location)

        def on_change(snap: Snapshot, changed: frozenset[str]) -> None:
            job = snap.get("lat")
            if job is not None and "i" in job.meta:
                seen.append((time.time(), job.meta["i"]))

        cache.subscribe(on_change)
        proc.start()
        proc.join(duration + 60)
        time.sleep(0.5)  # the last writes drain (the writer has exited)
        cache.close()
    else:
        path = Path(location)
        conn = _floor_db(path)
        wake = threading.Event()
        stop = threading.Event()
        names = {path.name, path.name + "-wal"}

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if os.path.basename(os.fsdecode(event.src_path)) in names:
                    wake.set()

        observer = Observer()
        observer.schedule(Handler(), str(path.parent))
        observer.start()

        def reader() -> None:
            last = 0
            while not stop.is_set():
                wake.wait(0.5)
                wake.clear()
                rows = conn.execute("SELECT pos, id FROM log WHERE pos > ?", (last,)).fetchall()
                now = time.time()
                for pos, job in rows:
                    seen.append((now, int(job)))
                    last = pos

        thread = threading.Thread(target=reader)
        thread.start()
        proc.start()
        proc.join(duration + 60)
        time.sleep(0.5)
        stop.set()
        thread.join()
        observer.stop()
        observer.join()
        conn.close()
    times = json.loads((tmp / "ready.times").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    lat, _missed = _latencies(times, seen)
    return lat


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def bench_sqlite(report: Any, *, quick: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="sb-bench-sqlite-"))
    try:
        _bench(report, root, quick=quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bench(report: Any, root: Path, *, quick: bool) -> None:
    raw: dict[str, Any] = {}
    # -- cost of one write -----------------------------------------------------------------
    url = f"sqlite:///{root}/cost.db"
    store = StatusStore(url)
    folder = StatusStore(root / "cost-folder")
    conn = _floor_db(root / "floor.db")
    doc = json.dumps({"schema": 1, "id": "j", "progress": 0.5})
    store.update("j", progress=0.0)
    folder.update("j", progress=0.0)

    def floor_call() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO t(id, doc) VALUES ('j', ?) "
            "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            (doc,),
        )
        conn.execute("COMMIT")

    # The floor above stores the same text every time, and SQLite leaves a row it would
    # not change alone: its COMMIT writes no page. Two more floors write what update() does.
    counter = itertools.count()

    def changing_call() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(UPSERT, ("c", f'{{"schema": 1, "id": "c", "seq": {next(counter)}}}'))
        conn.execute("COMMIT")

    written = store.read("j")
    assert written is not None
    conn.execute(UPSERT, ("r", job_text(written.replace(id="r"))))

    def rmw_call() -> None:
        # update()'s work in bare SQL and json: read, merge, write, log, on its document.
        conn.execute("BEGIN IMMEDIATE")
        current = json.loads(conn.execute("SELECT doc FROM t WHERE id = 'r'").fetchone()[0])
        current.update(progress=0.5, seq=current["seq"] + 1, updated_at=utc_now().isoformat())
        conn.execute(UPSERT, ("r", json.dumps(current)))
        conn.execute("INSERT INTO rmw_log(id) VALUES ('r')")
        conn.execute("COMMIT")

    def our_call() -> None:
        store.update("j", progress=0.5)

    def folder_call() -> None:
        folder.update("j", progress=0.5)

    runs, inner = (5, 200) if quick else (11, 1000)
    calls = {"floor": floor_call, "changing": changing_call, "rmw": rmw_call,
             "ours": our_call, "folder": folder_call}  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):  # interleaved: load from other processes hits all alike
        for name, fn in calls.items():
            count = inner if name != "folder" else max(20, inner // 5)
            t = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - t) / count)
    cost = {name: sorted(values)[runs // 2] for name, values in samples.items()}
    floor_cost, rmw_cost, folder_cost = cost["floor"], cost["rmw"], cost["folder"]

    def row(label: str, name: str) -> list[str]:
        c = cost[name]
        return [label, f"{c * 1e6:.1f}", f"{c / floor_cost:.2f}x", f"{c / rmw_cost:.2f}x",
                f"{c / folder_cost:.2f}x"]  # fmt: skip

    report.table(
        "SQLite: cost of one write (us, median)",
        ["call", "us", "vs floor", "vs read-modify-write floor", "vs folder update()"],
        [
            row("bare BEGIN IMMEDIATE; UPSERT; COMMIT (floor)", "floor"),
            row("the same, a document that changes", "changing"),
            row("bare read-modify-write: SELECT, json.loads/dumps, UPSERT, log INSERT, COMMIT",
                "rmw"),
            row("StatusStore('sqlite://...').update()", "ours"),
            row("StatusStore(folder).update()", "folder"),
        ],
        "Same settings (WAL, synchronous=NORMAL). Goals: update() <= 2x the bare transaction, "
        "<= 0.2x the folder's update(). The floor stores the same text every call, which "
        "SQLite does not write again (its COMMIT writes no page); the next two rows write a "
        "changed row, the last of them with update()'s whole work on its own document.",
    )  # fmt: skip
    our_cost = cost["ours"]
    raw["write_cost"] = {
        "floor": floor_cost, "changing_floor": cost["changing"], "rmw_floor": rmw_cost,
        "update": our_cost, "folder_update": folder_cost,
        "ratio_floor": our_cost / floor_cost, "ratio_rmw_floor": our_cost / rmw_cost,
        "ratio_folder": our_cost / folder_cost,
    }  # fmt: skip
    store.close()
    folder.close()
    conn.close()

    # -- write -> visible ------------------------------------------------------------------
    duration = 1.5 if quick else 5.0
    rows = []
    for rate in (200.0, 1000.0):
        floor = _latency("floor", str(root / f"lat-floor-{int(rate)}.db"), rate, duration)
        ours = _latency("statusbridge", f"sqlite:///{root}/lat-{int(rate)}.db", rate, duration)
        f99, o99 = _pct(floor, 0.99), _pct(ours, 0.99)
        for name, lat in (("watchdog on -wal + SELECT (floor)", floor), ("statusbridge", ours)):
            rows.append([f"{rate:g}/s", name, f"{_pct(lat, 0.5) * 1e3:.2f}",
                         f"{_pct(lat, 0.99) * 1e3:.2f}", f"{_pct(lat, 0.99) / f99:.1f}x",
                         str(len(lat))])  # fmt: skip
        raw[f"latency/{rate:g}"] = {"floor_p99": f99, "statusbridge_p99": o99, "ratio": o99 / f99}
    report.table(
        "SQLite: write -> visible from another process (ms)",
        ["rate", "path", "p50", "p99", "p99 / floor", "seen"],
        rows,
        "A writer process updates one job at the rate; this process sees it through a "
        "StatusCache subscriber, or a bare watchdog observer on the database's folder that "
        "SELECTs the new log rows (floor). Goal: p99 <= 3x the floor.",
    )

    # -- initial load ----------------------------------------------------------------------
    n = 20_000 if quick else 100_000
    url = f"sqlite:///{root}/load.db"
    with StatusStore(url) as store:
        from statusbridge.record import encode_job

        jobs = [BatchJob(id=f"job-{i:06d}", progress=0.5, message="x" * 40) for i in range(n)]
        store.put_records(jobs)  # one transaction
    files = root / "load-folder"
    files.mkdir()
    for job in jobs:
        (files / f"{job.id}.json").write_bytes(encode_job(job))
    del jobs

    def folder_floor() -> int:
        count = 0
        with os.scandir(files) as entries:
            for entry in entries:
                with open(entry.path, "rb") as f:
                    json.loads(f.read())
                count += 1
        return count

    def sqlite_load() -> int:
        with StatusCache(url) as cache:
            return len(cache.snapshot())

    loads: dict[str, list[float]] = {"floor": [], "ours": []}
    for _ in range(2 if quick else 3):
        for name, load_call in (("floor", folder_floor), ("ours", sqlite_load)):
            t = time.perf_counter()
            assert load_call() == n
            loads[name].append(time.perf_counter() - t)
    lf, lo = min(loads["floor"]), min(loads["ours"])
    report.table(
        f"SQLite: initial load of {n:,} records (s, best of runs)",
        ["path", "s", "vs floor"],
        [["folder floor: scandir + read + json.loads", f"{lf:.2f}", "1.00x"],
         ["StatusCache('sqlite://...') to its first snapshot", f"{lo:.2f}", f"{lo / lf:.2f}x"]],
        "Goal: <= 0.5x the folder floor.",
    )  # fmt: skip
    raw["initial_load"] = {"n": n, "folder_floor": lf, "sqlite_cache": lo, "ratio": lo / lf}

    # -- the -wal file with a cache attached -------------------------------------------------
    updates = 20_000 if quick else 100_000
    url = f"sqlite:///{root}/wal.db"
    wal = root / "wal.db-wal"
    biggest = 0
    with StatusStore(url) as store, StatusCache(url) as cache:
        t = time.perf_counter()
        for i in range(updates):
            store.update(f"w{i % 1000}", progress=(i % 100) / 100)
            if i % 1000 == 0 and wal.exists():
                biggest = max(biggest, wal.stat().st_size)
        elapsed = time.perf_counter() - t
        final = wal.stat().st_size if wal.exists() else 0
        caught = cache.wait_for_change(0, timeout=5)
        seen = len(caught)
    report.table(
        f"SQLite: the -wal file during {updates:,} updates with a cache attached",
        ["largest (MiB)", "at the end (MiB)", "updates/s", "jobs in the cache"],
        [[f"{biggest / 2**20:.2f}", f"{final / 2**20:.2f}", f"{updates / elapsed:,.0f}",
          str(seen)]],
        "Sampled every 1,000 updates. The cache's read transactions are short, so "
        "checkpoints proceed; journal_size_limit cuts the file back to 4 MiB.",
    )  # fmt: skip
    raw["wal"] = {"updates": updates, "largest": biggest, "final": final,
                  "updates_per_s": updates / elapsed}  # fmt: skip
    report.raw["sqlite"] = raw
