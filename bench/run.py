"""statusbridge against the alternatives, side by side, in one run on one machine.

Run ``python -m bench`` (full, a few minutes) or ``python -m bench --quick``
(under a minute; smaller sizes; CI runs it as a smoke test). Prints a markdown
report and writes it, its raw numbers and a plot to ``bench/results/``.
Figures are medians of several runs with [min..max]; goals are stated as
ratios against floors measured in the same run, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import queue
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bench import peers
from statusbridge import BatchJob, Snapshot, StatusCache, StatusStore, report_progress
from statusbridge.jobs._context import JobContext, activate, deactivate
from statusbridge.record import encode_job
from statusbridge.store.folder._atomic import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"
# bench/perf.py (issue 13)
PERF_PARTS = ("aggregates", "lookup", "throughput", "retention", "idle", "scan", "writers")
SPAWN = mp.get_context("spawn")


@dataclass
class Stat:
    """Median with min/max of repeated measurements (seconds or any unit)."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, scale: float = 1e6, unit: str = "us", digits: int = 1) -> str:
        lo, hi = min(self.values) * scale, max(self.values) * scale
        return f"{self.median * scale:.{digits}f} {unit} [{lo:.{digits}f}..{hi:.{digits}f}]"


def repeat(fn: Callable[[], object], *, runs: int, inner: int) -> Stat:
    """Seconds per call of ``fn``: ``runs`` samples, each the mean of ``inner`` calls."""
    fn()  # warm up
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
    return Stat(samples)


@dataclass
class Report:
    quick: bool
    sections: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def table(self, title: str, header: list[str], rows: list[list[str]], note: str = "") -> None:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if note:
            lines += ["", note]
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        self.sections.append(text)


def make_jobs(n: int, batch_size: int | None = None) -> list[BatchJob]:
    """``n`` running jobs in 10 batches, or in batches of ``batch_size`` consecutive jobs."""
    return [
        BatchJob(
            f"job-{i}",
            "running",
            progress=(i % 100) / 100,
            message="working",
            batch_id=f"b{i % 10}" if batch_size is None else f"b{i // batch_size}",
        )
        for i in range(n)
    ]


# -- 1. render cost ---------------------------------------------------------------------------
def bench_render(report: Report, sizes: list[int], runs: int) -> dict[str, dict[int, float]]:
    medians: dict[str, dict[int, float]] = {
        k: {} for k in ("dict", "statusbridge", "queue", "sqlite", "seed")
    }
    rows = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="sb-render-"))
        jobs = make_jobs(n)
        store = StatusStore(root / "sb")
        seed_dir = root / "seed"
        seed_dir.mkdir()
        conn = peers.sqlite_connect(root / "jobs.db")
        conn.execute("BEGIN")
        for job in jobs:
            store.update(job.id, status=job.status, progress=job.progress, message=job.message)
            peers.seed_write(
                seed_dir,
                job.id,
                {"status": "running", "progress": job.progress, "message": job.message},
            )
            peers.sqlite_write(conn, job.id, job.progress or 0.0, 0.0)
        conn.execute("COMMIT")
        plain = {job.id: job for job in jobs}
        q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        state: dict[str, Any] = {}
        for job in jobs:
            q.put((job.id, job))
        peers.queue_render(q, state)
        with StatusCache(root / "sb") as cache:
            inner_fast = max(1, 200_000 // n)
            inner_slow = max(1, 2_000 // n)

            def render_dict() -> object:
                return [j.progress for j in plain.values()]

            def render_sb() -> object:
                return [j.progress for j in cache.snapshot().values()]

            def render_queue() -> object:
                return [j.progress for j in peers.queue_render(q, state).values()]

            def render_sqlite() -> object:
                return [row[2] for row in peers.sqlite_render(conn)]

            def render_seed() -> object:
                docs, _torn = peers.seed_render(seed_dir)
                return [d["progress"] for d in docs.values()]

            stats = {
                "dict": repeat(render_dict, runs=runs, inner=inner_fast),
                "statusbridge": repeat(render_sb, runs=runs, inner=inner_fast),
                "queue": repeat(render_queue, runs=runs, inner=inner_fast),
                "sqlite": repeat(render_sqlite, runs=runs, inner=max(1, inner_fast // 20)),
                "seed": repeat(render_seed, runs=runs, inner=inner_slow),
            }
        conn.close()
        shutil.rmtree(root, ignore_errors=True)
        for key, st in stats.items():
            medians[key][n] = st.median
        rows.append(
            [f"{n:,}"]
            + [stats[k].fmt() for k in ("dict", "statusbridge", "queue", "sqlite", "seed")]
            + [
                f"{stats['statusbridge'].median / stats['dict'].median:.2f}x",
                f"{stats['seed'].median / stats['statusbridge'].median:,.0f}x",
            ]
        )
    report.table(
        "Render: read every job's status once (what a UI does per rerun)",
        [
            "jobs",
            "plain dict (floor)",
            "statusbridge snapshot",
            "in-process queue",
            "SQLite SELECT",
            "seed-style files",
            "sb / dict",
            "seed / sb",
        ],
        rows,
        "Goal: statusbridge <= 2x the plain-dict floor and >= 300x cheaper than seed-style "
        "files at 1,000 jobs.",
    )
    report.raw["render"] = medians
    return medians


# -- 2. write -> visible latency -----------------------------------------------------------------
def _latencies(times: list[float], seen: list[tuple[float, int]]) -> tuple[list[float], int]:
    """For every write i, first time a reader saw write i or a later one, minus its write time."""
    lat: list[float] = []
    k = 0
    seen = sorted(seen)
    best = -1
    missed = 0
    for i, written in enumerate(times):
        while k < len(seen) and best < i:
            best = max(best, seen[k][1])
            when = seen[k][0]
            k += 1
        if best >= i:
            lat.append(max(0.0, when - written))
        else:
            missed += 1
    return lat, missed


def _percentiles(lat: list[float]) -> tuple[float, float, float]:
    lat = sorted(lat)
    if not lat:
        return (float("nan"),) * 3
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]


def _run_writer(
    kind: str, target: Path, rate: float, duration: float, poll: Callable[[], None] | None = None
) -> list[float]:
    """Run a writer process; call ``poll`` in a loop meanwhile; return its write times."""
    ready = target.with_name(target.name + ".ready")
    proc = SPAWN.Process(
        target=peers.latency_writer, args=(kind, str(target), rate, duration, str(ready))
    )
    proc.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        if time.monotonic() > deadline or not proc.is_alive():
            raise RuntimeError(f"{kind} writer did not start")
        time.sleep(0.002)
    while proc.is_alive():
        if poll is not None:
            poll()
        else:
            proc.join(0.05)
    proc.join()
    times: list[float] = json.loads(Path(str(ready) + ".times").read_text())
    return times


def latency_statusbridge(rate: float, duration: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sb-lat-")) / "status"
    folder.mkdir()
    seen: list[tuple[float, int]] = []
    with StatusCache(folder) as cache:

        def on_change(snap: Snapshot, changed: frozenset[str]) -> None:
            job = snap.get("lat")
            if job is not None and "i" in job.meta:
                seen.append((time.time(), job.meta["i"]))

        cache.subscribe(on_change)
        times = _run_writer("statusbridge", folder, rate, duration)
        deadline = time.monotonic() + 5
        while (not seen or seen[-1][1] < len(times) - 1) and time.monotonic() < deadline:
            cache.wait_for_change(cache.version, 0.1)
    lat, missed = _latencies(times, seen)
    return {"lat": lat, "missed": missed, "writes": len(times), "views": len(seen)}


class DocumentReader(FileSystemEventHandler):
    """A bare watchdog reader: parse each JSON file an event names, hand it to ``on_doc``."""

    def __init__(self, on_doc: Callable[[str, dict[str, Any]], None]) -> None:
        self.on_doc = on_doc

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("moved", "created"):
            return
        path = os.fsdecode(event.dest_path or event.src_path)
        if not path.endswith(".json"):
            return
        try:
            doc = json.loads(Path(path).read_bytes())
        except (OSError, ValueError):
            return
        self.on_doc(path, doc)


def latency_watchdog_floor(rate: float, duration: float, kind: str = "watchdog") -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="sb-wd-")) / "status"
    folder.mkdir()
    seen: list[tuple[float, int]] = []

    def on_doc(path: str, doc: dict[str, Any]) -> None:
        if path.endswith("lat.json"):
            seen.append((time.time(), doc["i"]))

    observer = Observer()
    observer.schedule(DocumentReader(on_doc), str(folder))
    observer.start()
    try:
        times = _run_writer(kind, folder, rate, duration)
        deadline = time.monotonic() + 5
        while (not seen or seen[-1][1] < len(times) - 1) and time.monotonic() < deadline:
            time.sleep(0.01)  # a benchmark draining its last events, not a test
    finally:
        observer.stop()
        observer.join()
    lat, missed = _latencies(times, seen)
    return {"lat": lat, "missed": missed, "writes": len(times), "views": len(seen)}


def _poll_latency(kind: str, rate: float, duration: float, interval: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"sb-{kind}-"))
    target = root / ("jobs.db" if kind == "sqlite" else "status")
    if kind == "seed":
        target.mkdir()
    seen: list[tuple[float, int]] = []
    counts = {"torn": 0, "polls": 0}
    conn = peers.sqlite_connect(target) if kind == "sqlite" else None

    def poll() -> None:
        counts["polls"] += 1
        if conn is not None:
            rows = peers.sqlite_render(conn)
            i = rows[0][5] if rows else -1
        else:
            docs, torn = peers.seed_render(target)
            counts["torn"] += torn
            i = docs.get("lat", {}).get("i", -1)
        seen.append((time.time(), i))
        if interval:
            time.sleep(interval)

    times = _run_writer(kind, target, rate, duration, poll)
    poll()  # the UI's next render after the last write
    if conn is not None:
        conn.close()
    shutil.rmtree(root, ignore_errors=True)
    lat, missed = _latencies(times, seen)
    return {
        "lat": lat,
        "missed": missed,
        "writes": len(times),
        "views": counts["polls"],
        "torn": counts["torn"],
    }


def latency_queue(rate: float, duration: float) -> dict[str, Any]:
    q: queue.SimpleQueue[float] = queue.SimpleQueue()
    lat: list[float] = []

    def writer() -> None:
        for _ in peers._paced(rate, duration):
            q.put(time.time())
        q.put(-1.0)

    t = threading.Thread(target=writer)
    t.start()
    while (sent := q.get()) >= 0:
        lat.append(time.time() - sent)
    t.join()
    return {"lat": lat, "missed": 0, "writes": len(lat), "views": len(lat)}


def bench_latency(
    report: Report,
    rates: list[float],
    duration: float,
    poll_duration: float,
    poll_rates: list[float],
) -> None:
    rows = []
    raw: dict[str, Any] = {}

    def timed(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        """Run one measurement and add the reader process' CPU use (all its threads)."""
        cpu, wall = time.process_time(), time.perf_counter()
        res = fn(*args)
        res["cpu"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
        return res

    for rate in rates:
        runs: list[tuple[str, dict[str, Any]]] = [
            ("statusbridge (events)", timed(latency_statusbridge, rate, duration)),
            ("bare watchdog + replace (floor)", timed(latency_watchdog_floor, rate, duration)),
            (
                "bare watchdog, temp file beside the target",
                timed(latency_watchdog_floor, rate, duration, "watchdog-beside"),
            ),
            ("in-process queue (threads only)", timed(latency_queue, rate, duration)),
        ]
        for kind, label in (("seed", "seed-style files"), ("sqlite", "SQLite")):
            intervals = (1.0, 0.5, 0.0) if rate in poll_rates else (0.0,)
            for interval in intervals:
                name = f"{label}, poll {f'every {interval:g}s' if interval else 'flat out'}"
                d = poll_duration if interval else duration
                runs.append((name, timed(_poll_latency, kind, rate, d, interval)))
        floor_p99 = _percentiles(runs[1][1]["lat"])[1]
        for name, res in runs:
            p50, p99, mx = _percentiles(res["lat"])
            notes = [f"{res['views']} reads"]
            if res.get("torn"):
                notes.append(f"**{res['torn']} torn reads**")
            if res["missed"]:
                notes.append(f"{res['missed']} never seen")
            rows.append(
                [
                    f"{rate:g}/s",
                    name,
                    f"{p50 * 1e3:.2f}",
                    f"{p99 * 1e3:.2f}",
                    f"{mx * 1e3:.2f}",
                    f"{p99 / floor_p99:.1f}x",
                    f"{res['cpu']:.0%}",
                    ", ".join(notes),
                ]
            )
            raw[f"{rate:g}/{name}"] = {
                "p50": p50,
                "p99": p99,
                "max": mx,
                **{k: v for k, v in res.items() if k != "lat"},
            }
    report.table(
        "Write -> visible latency, updates from another process (ms)",
        ["rate", "peer", "p50", "p99", "max", "p99 / floor", "reader CPU", "notes"],
        rows,
        "Latency of every write: from the write until the reader first saw it or a later "
        "value. 'reader CPU': CPU time of the reading process (all threads) over wall time, "
        "writer excluded. 'reads' counts the reader's observations (a poller's renders). "
        "'torn reads': a seed-style file read empty or half-written (json.load failed). "
        "The floor writes its temp file in a sub-folder, as StatusStore does; with the temp "
        "file beside the target, watchdog pairs MOVED_FROM/MOVED_TO through a queue that can "
        "stall for 0.5 s (watchdog issue #649). "
        "Goal: statusbridge "
        "p99 <= 10 ms at 250/s and <= 3x the bare-watchdog floor.",
    )
    report.raw["latency"] = raw


# -- 3. write cost -------------------------------------------------------------------------------
def bench_write_cost(report: Report, runs: int, inner: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="sb-write-"))
    store = StatusStore(root / "sb")
    job = store.update("w", status="running", progress=0.1, meta={"step": 1})
    data = encode_job(job)
    doc = json.loads(data)
    seed_dir = root / "seed"
    seed_dir.mkdir()
    counter = iter(range(10**9))
    stats = {
        "in-place json.dump + flock (seed)": repeat(
            lambda: peers.seed_write(seed_dir, "w", doc), runs=runs, inner=inner
        ),
        "bare temp file + os.replace (floor)": repeat(
            lambda: write_atomic(root / "bare.json", data), runs=runs, inner=inner
        ),
        "StatusStore.update": repeat(
            lambda: store.update("w", progress=(next(counter) % 100) / 100), runs=runs, inner=inner
        ),
    }
    ctx = JobContext(store, "w", interval=3600.0)
    token = activate(ctx)
    report_progress(0.0)  # the first report is written, the rest coalesce
    stats["report_progress, coalesced"] = repeat(
        lambda: report_progress(0.5, "working"), runs=runs, inner=inner * 100
    )
    deactivate(ctx, token)
    ctx = JobContext(store, "w", interval=0.0)
    token = activate(ctx)
    stats["report_progress, written"] = repeat(
        lambda: report_progress(0.5, "working"), runs=runs, inner=inner
    )
    deactivate(ctx, token)
    shutil.rmtree(root, ignore_errors=True)
    floor = stats["bare temp file + os.replace (floor)"].median
    rows = [[name, st.fmt(digits=2), f"{st.median / floor:.2f}x"] for name, st in stats.items()]
    report.table(
        "Write cost per update",
        ["write", "time", "/ bare replace"],
        rows,
        "Goals: update() <= 2x a bare temp-file-plus-replace; a coalesced report_progress <= 5 us.",
    )
    report.raw["write"] = {k: v.median for k, v in stats.items()}


# -- 4. scale --------------------------------------------------------------------------------------
def _populate(folder: Path, n: int) -> None:
    store = StatusStore(folder)
    for i in range(n):
        store.update(
            f"job-{i}",
            status="running",
            progress=(i % 100) / 100,
            batch_id=f"b{i % 10}",
            message="working",
        )


def bench_scale(report: Report, scan_sizes: list[int], burst: int) -> None:
    rows = []
    raw: dict[str, Any] = {}
    for n in scan_sizes:
        folder = Path(tempfile.mkdtemp(prefix="sb-scale-")) / "status"
        _populate(folder, n)
        gc.collect()
        t = time.perf_counter()
        cache = StatusCache(folder)
        scan = time.perf_counter() - t
        cache.close()
        del cache
        gc.collect()
        # Memory in a second pass: tracemalloc slows allocation several times over.
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        cache = StatusCache(folder)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_record = (after - before) / n
        cache.close()
        shutil.rmtree(folder.parent, ignore_errors=True)
        rows.append([f"initial scan of {n:,} files", f"{scan:.2f} s", "goal <= 3 s at 100,000"])
        rows.append(
            [f"memory per cached record ({n:,} jobs)", f"{per_record:,.0f} bytes", "goal <= 2 KiB"]
        )
        raw[f"scan_{n}"] = scan
        raw[f"bytes_per_record_{n}"] = per_record
    for n in (100, 100_000):
        snap = Snapshot().with_changes({j.id: j for j in make_jobs(n)})
        new = BatchJob("job-5", progress=0.5, batch_id="b5")

        def apply(snap: Snapshot = snap) -> None:
            snap.with_changes({"job-5": new})  # what the cache does per applied change

        st = repeat(apply, runs=5, inner=20_000)
        rows.append(
            [
                f"apply one change at {n:,} jobs",
                st.fmt(digits=2),
                "goal: no more at 100,000 than at 100",
            ]
        )
        raw[f"apply_{n}"] = st.median
    # events applied per second under a burst of renames from another process
    folder = Path(tempfile.mkdtemp(prefix="sb-burst-")) / "status"
    folder.mkdir()
    ready, go = folder.with_name("ready"), folder.with_name("go")
    with StatusCache(folder) as cache:
        proc = SPAWN.Process(
            target=peers.burst_writer, args=(str(folder), burst, str(ready), str(go))
        )
        proc.start()
        while not ready.exists():
            time.sleep(0.005)
        t = time.perf_counter()
        go.touch()
        while len(cache.snapshot()) < burst:
            cache.wait_for_change(cache.version, 1.0)
            if time.perf_counter() - t > 120:
                break
        elapsed = time.perf_counter() - t
        proc.join()
        health = cache.health()
    rows.append(
        [
            f"burst: {burst:,} records renamed in by another process",
            f"{burst / elapsed:,.0f} records/s applied ({elapsed:.2f} s, "
            f"{health.version} versions, {health.rescans} rescans)",
            "",
        ]
    )
    raw["burst_per_s"] = burst / elapsed
    shutil.rmtree(folder.parent, ignore_errors=True)
    report.table("Scale", ["what", "measured", "goal"], rows)
    report.raw["scale"] = raw


def plot(medians: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = {
        "dict": "plain dict (floor)",
        "statusbridge": "statusbridge snapshot",
        "queue": "in-process queue",
        "sqlite": "SQLite SELECT",
        "seed": "seed-style files",
    }
    for key, label in labels.items():
        sizes = sorted(medians[key])
        ax.plot(sizes, [medians[key][n] * 1e6 for n in sizes], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs")
    ax.set_ylabel("render cost (us, log)")
    ax.set_title("Cost of one render as the number of jobs grows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, under a minute")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--only",
        choices=["render", "latency", "write", "scale", "redis", "sqlite", "web", *PERF_PARTS],
        help="run one part (results go to results-<part>.*)",
    )
    args = parser.parse_args(argv)
    report = Report(args.quick)
    started = time.perf_counter()
    print(f"# statusbridge benchmark{' (quick)' if args.quick else ''}\n\n{machine()}\n")

    def want(part: str) -> bool:
        return args.only in (None, part)

    q = args.quick
    medians = None
    if want("render"):
        medians = bench_render(report, [100, 1000, 10_000], runs=3 if q else 7)
    if want("latency"):
        bench_latency(
            report,
            [250.0, 1000.0],
            duration=0.6 if q else 4.0,
            poll_duration=2.0 if q else 6.0,
            poll_rates=[250.0] if q else [250.0, 1000.0],
        )
    if want("write"):
        bench_write_cost(report, runs=3 if q else 7, inner=200 if q else 1000)
    if want("scale"):
        bench_scale(report, [2_000] if q else [10_000, 100_000], burst=2_000 if q else 20_000)
    if want("redis"):
        from bench.redis_backend import bench_redis

        bench_redis(report, quick=q)
    if want("sqlite"):
        from bench.sqlite_backend import bench_sqlite

        bench_sqlite(report, quick=q)
    if want("web"):
        from bench.web import bench_web

        bench_web(report, quick=q)
    if args.only is None or args.only in PERF_PARTS:
        from bench import perf  # imports this module

        perf.run_all(report, q, args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if q else "") + (f"-{args.only}" if args.only else "")
    if medians is not None:
        plot(medians, args.out / f"render{suffix}.png")
    header = (
        f"# statusbridge benchmark{' (quick)' if args.quick else ''}\n\n"
        f"Machine: {machine()}. Total time {time.perf_counter() - started:.0f} s.\n\n"
    )
    (args.out / f"results{suffix}.md").write_text(header + "\n".join(report.sections))
    (args.out / f"results{suffix}.json").write_text(json.dumps(report.raw, indent=2, default=str))
    print(
        f"wrote {args.out}/results{suffix}.md, .json and render{suffix}.png "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0
