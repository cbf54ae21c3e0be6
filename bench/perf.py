"""Figures of issue 13 (performance at scale), each a ratio against a baseline of the same run.

Run with the rest: ``python -m bench [--quick] [--only PART]`` (parts ``aggregates``,
``lookup``, ``throughput``, ``retention``,
``idle``, ``scan``, ``writers``); alone: ``python -m bench.perf [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.run import Report, Stat, make_jobs, repeat
from statusbridge import BatchJob, BatchManager, BatchQueue, Snapshot, StatusStore
from statusbridge.record import BatchStatus, encode_job
from statusbridge.record._model import utc_now
from statusbridge.store.folder._atomic import write_atomic

__all__ = ["bench_aggregates", "bench_lookup", "bench_retention"]


def _ratio(big: Stat, small: Stat) -> str:
    return f"{big.median / small.median:.2f}x"


def _against(ours: Stat, theirs: Stat, unit: str, digits: int) -> list[str]:
    """Table cells: both figures, then ours / theirs."""
    return [ours.fmt(1, unit, digits), theirs.fmt(1, unit, digits), _ratio(ours, theirs)]


# -- aggregates after a change -------------------------------------------------------------------
def bench_aggregates(report: Report, sizes: tuple[int, int], runs: int) -> None:
    """What a UI asks on every render, right after a change, at a small and a large size.

    Batches of 100 jobs (more batches as jobs grow, as with a BatchManager); the
    last row lists a batch holding a tenth of all jobs, which is a copy of that
    many references whatever the bookkeeping.
    """
    stats: dict[str, dict[int, Stat]] = {}
    for n in sizes:
        for tenth, batch_size in ((False, 100), (True, n // 10)):
            base = Snapshot().with_changes({j.id: j for j in make_jobs(n, batch_size)})
            base.summary(), base.summary("b5"), base.batch_ids(), base.batch("b5")
            current = [base]
            job_id = f"job-{5 * batch_size}"

            def changed() -> Snapshot:
                # A new snapshot per call, as the cache makes one per change.
                snap = current[0]
                progress = (snap.version % 100) / 100
                job = BatchJob(job_id, "running", progress=progress, batch_id="b5")
                current[0] = snap = snap.with_changes({job_id: job})
                return snap

            queries = {
                "apply a change": lambda s: None,
                "change + summary()": lambda s: s.summary(),
                "change + summary(batch_id)": lambda s: s.summary("b5"),
                "change + batch_ids()": lambda s: s.batch_ids(),
                "change + batch(batch_id)": lambda s: s.batch("b5"),
            }
            if tenth:
                queries = {
                    "change + batch(batch_id), a tenth of all jobs": queries[
                        "change + batch(batch_id)"
                    ]
                }
            for name, query in queries.items():
                stats.setdefault(name, {})[n] = repeat(
                    lambda query=query: query(changed()), runs=runs, inner=200
                )
    small, big = sizes
    rows = [
        [name, by_n[small].fmt(), by_n[big].fmt(), _ratio(by_n[big], by_n[small])]
        for name, by_n in stats.items()
    ]
    report.table(
        "Aggregates after a change (what a UI asks on every render)",
        ["what", f"{small:,} jobs", f"{big:,} jobs", "ratio"],
        rows,
        f"Goal: ratio <= 3x between {small:,} and {big:,} jobs (batches of 100 jobs; "
        "the last row is O(batch size) by nature: it returns a tuple of that batch).",
    )
    report.raw["aggregates"] = {
        name: {str(n): st.median for n, st in by_n.items()} for name, by_n in stats.items()
    }


# -- list_batches over batches with many jobs ---------------------------------------------------
def _list_batches_cost(root: Path, n: int, runs: int) -> Stat:
    """``list_batches()`` with 10 open batches of n/10 jobs, every job's record running."""
    folder, batch_dir = root / f"status-{n}", root / f"batches-{n}"
    folder.mkdir(parents=True)
    with BatchManager(batch_dir=batch_dir, status_dir=folder) as manager:
        now = utc_now()
        for b in range(10):
            batch_id = manager.create_custom_batch([{"i": i} for i in range(n // 10)], f"b{b}")
            for job_id in manager.batches[batch_id].job_ids:
                job = BatchJob(
                    job_id,
                    BatchStatus.RUNNING,
                    progress=0.5,
                    batch_id=batch_id,
                    created_at=now,
                    updated_at=now,
                    seq=1,
                )
                write_atomic(folder / f"{job_id}.json", encode_job(job))
        deadline = time.monotonic() + 300
        while len(manager.queue.snapshot()) < n and time.monotonic() < deadline:
            manager.queue.cache.wait_for_change(manager.queue.cache.version, 1.0)
        return repeat(manager.list_batches, runs=runs, inner=10)


def bench_list_batches(report: Report, sizes: tuple[int, int], runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="sb-list-"))
    try:
        stats = {n: _list_batches_cost(root, n, runs) for n in sizes}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, big = sizes
    report.table(
        "BatchManager.list_batches(): 10 open batches, every job running",
        [f"{small:,} jobs", f"{big:,} jobs", "ratio"],
        [
            [
                stats[small].fmt(1e3, "ms", 3),
                stats[big].fmt(1e3, "ms", 3),
                _ratio(stats[big], stats[small]),
            ]
        ],
        f"Goal: ratio <= 3x between {small:,} and {big:,} jobs.",
    )
    report.raw["list_batches"] = {str(n): st.median for n, st in stats.items()}


# -- snapshot.get against a plain dict ---------------------------------------------------------
def bench_lookup(report: Report, n: int, runs: int) -> None:
    jobs = make_jobs(n)
    plain = {j.id: j for j in jobs}
    snap = Snapshot().with_changes(plain)
    ids = [f"job-{i}" for i in range(0, n, max(1, n // 1000))][:1000]

    def via_dict() -> object:
        get = plain.get
        return [get(i) for i in ids]

    def via_snapshot() -> object:
        get = snap.get
        return [get(i) for i in ids]

    def via_snapshot_attr() -> object:  # the seed's get_job_status pattern: no local alias
        return [snap.get(i) for i in ids]

    # Interleaved, so that load from other processes hits all three alike;
    # the ratio of the fastest samples is the least noisy figure.
    def via_trie() -> object:  # the immutables.Map under the snapshot, on its own
        get = snap._jobs.get
        return [get(i) for i in ids]

    fns = {"dict": via_dict, "bound": via_snapshot, "per call": via_snapshot_attr, "trie": via_trie}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs * 5):
        for name, fn in fns.items():
            samples[name].append(repeat(fn, runs=1, inner=50).values[0])
    d, s, a, t = (Stat(samples[k]) for k in fns)
    report.table(
        f"Lookup: get() of {len(ids):,} ids in {n:,} jobs (fastest of {runs * 5} interleaved)",
        [
            "plain dict",
            "snapshot.get (bound once)",
            "snapshot.get (per call)",
            "bare trie",
            "ratios to dict",
        ],
        [
            [
                d.fmt(),
                s.fmt(),
                a.fmt(),
                t.fmt(),
                " / ".join(f"{min(x.values) / min(d.values):.2f}x" for x in (s, a, t)),
            ]
        ],
        "Goal: <= 1.5x the plain dict. The snapshot is a hash trie (immutables.Map): "
        "a lookup walks a few levels where a dict probes once.",
    )
    report.raw["lookup"] = {k: min(v) for k, v in samples.items()}


# -- throughput with many finished records already in the folder --------------------------------
def trivial(params: Any) -> int:
    return 1


def _finished_records(folder: Path, n: int) -> None:
    """``n`` completed records, written directly (quicker than through a store)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = utc_now()
    for i in range(n):
        job = BatchJob(
            f"old-{i}",
            BatchStatus.COMPLETED,
            batch_id=f"old{i % 100}",
            created_at=now,
            completed_at=now,
            updated_at=now,
            seq=1,
        )
        write_atomic(folder / f"{job.id}.json", encode_job(job))


def _jobs_per_second(folder: Path, jobs: int, keep: int) -> tuple[float, float]:
    """Jobs/s, and this process's CPU seconds per job (less sensitive to other load)."""
    with BatchQueue(2, max_completed_jobs=keep, status_dir=folder) as queue:
        t, cpu = time.perf_counter(), time.process_time()
        ids = [queue.submit(trivial) for _ in range(jobs)]
        queue.wait(ids, timeout=600)
        return jobs / (time.perf_counter() - t), (time.process_time() - cpu) / jobs


def bench_retention(report: Report, records: int, jobs: int, runs: int) -> None:
    """Jobs/s with ``records`` finished records in the folder (each new one evicts an old one)."""
    root = Path(tempfile.mkdtemp(prefix="sb-retention-"))
    try:
        full = root / "full"
        _finished_records(full, records)
        empty_runs, full_runs = [], []
        for run in range(runs):
            empty_runs.append(_jobs_per_second(root / f"empty-{run}", jobs, keep=records))
            full_runs.append(_jobs_per_second(full, jobs, keep=records))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    empty, full_ = Stat([r for r, _ in empty_runs]), Stat([r for r, _ in full_runs])
    cpu_empty, cpu_full = Stat([c for _, c in empty_runs]), Stat([c for _, c in full_runs])
    report.table(
        f"Retention: trivial jobs/s with {records:,} finished records in the folder",
        ["empty folder", f"{records:,} finished records", "ratio", "CPU per job (empty / full)"],
        [
            [
                empty.fmt(1, "jobs/s", 0),
                full_.fmt(1, "jobs/s", 0),
                f"{full_.median / empty.median:.2f}x",
                f"{cpu_empty.median * 1e6:.0f} / {cpu_full.median * 1e6:.0f} us "
                f"({cpu_empty.median / cpu_full.median:.2f}x)",
            ]
        ],
        "Goal: >= 0.5x the empty folder (retention keeps the newest "
        f"{records:,}: every job finished evicts one old record). CPU per job is this "
        "process's CPU time over the same runs: less moved by other load than jobs/s.",
    )
    report.raw["retention"] = {
        "empty": empty.median,
        "full": full_.median,
        "cpu_empty": cpu_empty.median,
        "cpu_full": cpu_full.median,
    }


# -- job throughput against Huey ----------------------------------------------------------------
def _huey_jobs_per_second(root: Path, jobs: int) -> tuple[float, float, float]:
    """Huey's standard consumer (``-w 4 -k thread``) in its own process; this one enqueues."""
    # One database for every run of a process: huey keeps its connection to the
    # file it first opened, so the file name is set once, before the import.
    os.environ.setdefault("SB_BENCH_HUEY_DB", str(root.parent / "huey.db"))
    env = dict(os.environ)
    from bench import huey_tasks

    consumer = subprocess.Popen(
        [
            shutil.which("huey_consumer") or "huey_consumer",
            "bench.huey_tasks.huey",
            "-w",
            "4",
            "-k",
            "thread",
            "-q",
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        huey_tasks.trivial(None).get(blocking=True, timeout=60)  # started and warm
        worker = psutil.Process(consumer.pid)
        before = sum(worker.cpu_times()[:2]), time.process_time()
        t = time.perf_counter()
        results = [huey_tasks.trivial(None) for _ in range(jobs)]
        submit = (time.perf_counter() - t) / jobs
        for result in results:
            result.get(blocking=True, timeout=600)
        rate = jobs / (time.perf_counter() - t)
        cpu = sum(worker.cpu_times()[:2]) - before[0] + time.process_time() - before[1]
        return rate, submit, cpu / jobs
    finally:
        consumer.terminate()
        consumer.wait(30)


def _statusbridge_jobs_per_second(
    folder: Path, jobs: int, record_delay: float = 1.0, *, sqlite: bool = False
) -> tuple[float, float, float]:
    where = f"sqlite:///{folder}/status.db" if sqlite else folder
    with BatchQueue(
        4, max_completed_jobs=jobs, status_dir=where, record_delay=record_delay
    ) as queue:
        queue.wait([queue.submit(trivial)], timeout=60)
        cpu = time.process_time()
        t = time.perf_counter()
        ids = [queue.submit(trivial) for _ in range(jobs)]
        submit = (time.perf_counter() - t) / jobs
        queue.wait(ids, timeout=600)
        rate = jobs / (time.perf_counter() - t)
        return rate, submit, (time.process_time() - cpu) / jobs


def _manager_jobs_per_second(
    folder: Path, jobs: int, *, sqlite: bool = False
) -> tuple[float, float, float]:
    """One batch of ``jobs`` through BatchManager: ``start_batch`` returns at once, the
    PENDING records are written in the background (a chunk per transaction on SQLite)
    and a job that ends within ``record_delay`` writes only its end (two writes per job)."""
    url = f"sqlite:///{folder}/status.db"
    batch_dir, status_dir = (url, url) if sqlite else (folder / "batches", folder / "status")
    with BatchManager(batch_dir, 4, status_dir, max_completed_jobs=jobs + 1) as manager:
        warm = manager.create_custom_batch([{}], "warm")
        manager.start_batch(warm, trivial)
        manager.queue.wait(timeout=60)
        batch_id = manager.create_custom_batch([{"i": i} for i in range(jobs)], "bench")
        cpu = time.process_time()
        t = time.perf_counter()
        manager.start_batch(batch_id, trivial)
        submit = (time.perf_counter() - t) / jobs
        manager.queue.wait(timeout=600)
        rate = jobs / (time.perf_counter() - t)
        return rate, submit, (time.process_time() - cpu) / jobs


def _bare_writes_per_second(folder: Path, jobs: int, writes: int) -> tuple[float, float, float]:
    """The I/O floor of a job: ``writes`` locked temp-file + rename writes of a small JSON
    document per job from 4 threads, no cache, no queue (what statusbridge cannot go below)."""
    import fcntl
    import threading

    tmp = folder / ".tmp"
    tmp.mkdir()
    document = encode_job(BatchJob("job-0", BatchStatus.RUNNING, seq=1, updated_at=utc_now()))
    locks = [os.open(tmp / f"lock-{i}", os.O_RDWR | os.O_CREAT) for i in range(64)]

    def write(job: int, attempt: int) -> None:
        lock = locks[job % 64]
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            temp = tmp / f"{job}.{attempt}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, document)
            os.close(fd)
            os.replace(temp, folder / f"job-{job}.json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def worker(first: int) -> None:
        for job in range(first, jobs, 4):
            for attempt in range(writes):
                write(job, attempt)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    cpu = time.process_time()
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = jobs / (time.perf_counter() - t)
    cpu = (time.process_time() - cpu) / jobs
    for lock in locks:
        os.close(lock)
    return rate, float("nan"), cpu


def bench_throughput(report: Report, jobs: int, runs: int) -> None:
    """Trivial jobs end to end, 4 worker threads: BatchQueue, BatchManager, Huey."""
    root = Path(tempfile.mkdtemp(prefix="sb-throughput-"))
    peers: dict[str, Callable[[Path, int], tuple[float, float, float]]] = {
        "BatchQueue": _statusbridge_jobs_per_second,
        "BatchQueue, record_delay=60 s (no PENDING record for the backlog)": partial(
            _statusbridge_jobs_per_second, record_delay=60.0
        ),
        "BatchManager (one batch)": _manager_jobs_per_second,
        "BatchQueue on sqlite://": partial(_statusbridge_jobs_per_second, sqlite=True),
        "BatchManager (one batch) on sqlite://": partial(_manager_jobs_per_second, sqlite=True),
        "huey": _huey_jobs_per_second,
        "floor: 1 atomic write per job": partial(_bare_writes_per_second, writes=1),
        "floor: 3 atomic writes per job": partial(_bare_writes_per_second, writes=3),
    }
    rates: dict[str, list[float]] = {name: [] for name in peers}
    submits: dict[str, list[float]] = {name: [] for name in peers}
    cpus: dict[str, list[float]] = {name: [] for name in peers}  # CPU-s per job, all processes
    try:
        for run in range(runs):
            for n, (name, measure) in enumerate(peers.items()):
                where = root / f"{n}-{run}"
                where.mkdir()
                rate, submit, cpu = measure(where, jobs)
                rates[name].append(rate)
                submits[name].append(submit)
                cpus[name].append(cpu)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    huey = Stat(rates["huey"])
    # Jobs per CPU-second: what a loaded machine disturbs least (a busy neighbour
    # stretches the wall clock, much less the CPU a job takes).
    per_cpu = {name: Stat([1 / c for c in values]) for name, values in cpus.items()}
    report.table(
        f"Throughput: {jobs:,} trivial jobs end to end, 4 worker threads",
        ["what", "jobs/s", "vs huey", "CPU per job", "jobs per CPU-s vs huey", "submit per job"],
        [
            [
                name if name != "huey" else "huey.SqliteHuey + huey_consumer -w 4 -k thread",
                Stat(rates[name]).fmt(1, "jobs/s", 0),
                _ratio(Stat(rates[name]), huey),
                Stat(cpus[name]).fmt(1e6, "us", 0),
                _ratio(per_cpu[name], per_cpu["huey"]),
                Stat(submits[name]).fmt(1e3, "ms", 3) if name.startswith(("B", "h")) else "",
            ]
            for name in peers
        ],
        "Goals: >= 0.5x Huey on a folder, >= 1.0x on SQLite. A BatchQueue job, and a "
        "BatchManager job on thread workers, starts in memory and is written once when it "
        "ends short of record_delay (1 s); one still queued after record_delay gets its "
        "PENDING record then (two writes), and RUNNING is written only for a job that "
        "outlives record_delay. A Huey task is a row "
        "in one SQLite file (no fsync on either side). The floors are the bare file "
        "writes of a job from 4 threads in Python: no cache, no queue, no records read.",
    )
    report.raw["throughput"] = {name: Stat(values).median for name, values in rates.items()}
    report.raw["throughput_cpu_per_job"] = {n: Stat(v).median for n, v in cpus.items()}


# -- idle cost ------------------------------------------------------------------------------------
def _process_counters() -> tuple[float, int]:
    """CPU seconds and context switches (wakeups) of this process, all threads."""
    switches = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return time.process_time(), switches


def idle_cost(kind: str, folder: str, window: float, out: str) -> None:
    """In a spawned process: watch ``folder``, wait for the load, then measure ``window`` s."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    from statusbridge import StatusCache

    if kind == "statusbridge":
        watcher: Any = StatusCache(folder)
        stop = watcher.close
    else:  # the floor: a bare observer with a handler that does nothing
        watcher = Observer()
        watcher.schedule(FileSystemEventHandler(), folder)
        watcher.start()

        def stop() -> None:
            watcher.stop()
            watcher.join()

    time.sleep(1.0)  # settle after the initial scan
    cpu0, sw0 = _process_counters()
    time.sleep(window)  # the measured idle period (the main thread sleeps: 1 wakeup)
    cpu1, sw1 = _process_counters()
    stop()
    Path(out).write_text(f"{cpu1 - cpu0} {sw1 - sw0}")


def bench_idle(report: Report, records: int, window: float) -> None:
    import multiprocessing

    root = Path(tempfile.mkdtemp(prefix="sb-idle-"))
    rows = []
    raw: dict[str, Any] = {}
    try:
        _finished_records(root / "status", records)
        for kind in ("statusbridge", "bare watchdog observer"):
            out = root / "out"
            proc = multiprocessing.get_context("spawn").Process(
                target=idle_cost, args=(kind, str(root / "status"), window, str(out))
            )
            proc.start()
            proc.join(600)
            cpu, switches = (float(x) for x in out.read_text().split())
            per30 = 30.0 / window
            raw[kind] = {"cpu_s_per_30s": cpu * per30, "wakeups_per_30s": switches * per30}
            rows.append([kind, f"{cpu * per30:.3f} CPU-s", f"{switches * per30:,.0f}"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.table(
        f"Idle cost of watching {records:,} records (inotify), per 30 s "
        f"(measured over {window:g} s)",
        ["watcher", "CPU", "wakeups (context switches, all threads)"],
        rows,
        "Goal: statusbridge <= 0.05 CPU-s and <= 100 wakeups per 30 s.",
    )
    report.raw["idle"] = raw


# -- initial scan in a fresh process --------------------------------------------------------------
def scan_in_fresh_process(kind: str, folder: str, out: str) -> None:
    """In a spawned process: load every record of ``folder``; write seconds and RSS growth."""
    import json
    import resource

    from statusbridge import StatusCache  # imported before the first figure: not counted

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if kind == "floor":
        docs = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    with open(entry.path, "rb") as f:
                        docs[entry.name] = json.loads(f.read())
        count = len(docs)
    else:
        cache = StatusCache(folder)
        count = len(cache.snapshot())
    elapsed = time.perf_counter() - t
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024  # KiB on Linux
    Path(out).write_text(f"{elapsed} {count} {rss}")


def bench_scan(report: Report, records: int, runs: int) -> None:
    import multiprocessing

    root = Path(tempfile.mkdtemp(prefix="sb-scan-"))
    times: dict[str, list[float]] = {"floor": [], "statusbridge": []}
    rss: dict[str, list[float]] = {"floor": [], "statusbridge": []}
    try:
        _finished_records(root / "status", records)
        for _ in range(runs):
            for kind in ("floor", "statusbridge"):
                out = root / "out"
                proc = multiprocessing.get_context("spawn").Process(
                    target=scan_in_fresh_process, args=(kind, str(root / "status"), str(out))
                )
                proc.start()
                proc.join(900)
                elapsed, count, grown = (float(x) for x in out.read_text().split())
                assert int(count) == records, (kind, count)
                times[kind].append(elapsed)
                rss[kind].append(grown / records)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    floor, sb = Stat(times["floor"]), Stat(times["statusbridge"])
    report.table(
        f"Initial scan of {records:,} records in a fresh process",
        [
            "floor: scandir + read + json.loads",
            "StatusCache(folder)",
            "ratio",
            "RSS growth per record (floor / statusbridge)",
        ],
        [
            [
                *_against(floor, sb, "s", 2)[:2],
                f"{sb.median / floor.median:.2f}x",
                f"{Stat(rss['floor']).median:,.0f} / {Stat(rss['statusbridge']).median:,.0f} bytes",
            ]
        ],
        "Goals: <= 1.5x the floor; <= 1 KiB of RSS per cached record (peak RSS "
        "growth during the load; the floor keeps the decoded dicts).",
    )
    report.raw["scan"] = {
        "floor": floor.median,
        "statusbridge": sb.median,
        "rss_per_record": Stat(rss["statusbridge"]).median,
    }


# -- write -> visible with 8 writer processes ---------------------------------------------------
def many_writer(spec: tuple[str, str, int, int, float, float, str, str]) -> None:
    """In a spawned process: ``rate`` writes/s over ``jobs`` jobs; save (time, job, n) per write."""
    import json

    from bench.peers import _paced

    kind, folder, writer, jobs, rate, duration, go, out = spec
    target = Path(folder)
    store = StatusStore(target) if kind == "statusbridge" else None
    Path(out + ".ready").touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    written: list[tuple[float, str, int]] = []
    for i in _paced(rate, duration):
        job_id, n = f"w{writer}-j{i % jobs}", i // jobs
        written.append((time.time(), job_id, n))
        if store is not None:
            store.update(job_id, meta={"n": n})
        else:
            write_atomic(
                target / f"{job_id}.json", json.dumps({"n": n}).encode(), temp_dir=target / ".tmp"
            )
    Path(out).write_text(json.dumps(written))


def _many_writers_latency(
    kind: str, writers: int, jobs: int, rate: float, duration: float
) -> list[float]:
    import json
    import multiprocessing

    from watchdog.observers import Observer

    from bench.run import DocumentReader, _latencies
    from statusbridge import StatusCache

    root = Path(tempfile.mkdtemp(prefix="sb-many-"))
    folder = root / "status"
    folder.mkdir()
    seen: dict[str, list[tuple[float, int]]] = {}
    stop: Any
    if kind == "statusbridge":
        cache = StatusCache(folder)

        def on_change(snap: Snapshot, changed: frozenset[str]) -> None:
            now = time.time()
            for job_id in changed:
                job = snap.get(job_id)
                if job is not None and "n" in job.meta:
                    seen.setdefault(job_id, []).append((now, job.meta["n"]))

        cache.subscribe(on_change)
        stop = cache.close
    else:

        def on_doc(path: str, doc: dict[str, Any]) -> None:
            seen.setdefault(Path(path).stem, []).append((time.time(), doc["n"]))

        observer = Observer()
        observer.schedule(DocumentReader(on_doc), str(folder))
        observer.start()

        def stop() -> None:
            observer.stop()
            observer.join()

    go = root / "go"
    procs = [
        multiprocessing.get_context("spawn").Process(
            target=many_writer,
            args=((kind, str(folder), w, jobs, rate, duration, str(go), str(root / f"w{w}")),),
        )
        for w in range(writers)
    ]
    try:
        for proc in procs:
            proc.start()
        while not all((root / f"w{w}.ready").exists() for w in range(writers)):
            time.sleep(0.01)
        go.touch()
        for proc in procs:
            proc.join(600)
        time.sleep(1.0)  # a benchmark draining its last events, not a test
    finally:
        stop()
    lat: list[float] = []
    for w in range(writers):
        by_job: dict[str, list[float]] = {}
        for t, job_id, _n in json.loads((root / f"w{w}").read_text()):
            by_job.setdefault(job_id, []).append(t)
        for job_id, times in by_job.items():
            lat.extend(_latencies(times, seen.get(job_id, []))[0])
    shutil.rmtree(root, ignore_errors=True)
    return lat


def bench_many_writers(report: Report, writers: int, duration: float) -> None:
    from bench.run import _percentiles

    rows, raw = [], {}
    for kind in ("statusbridge", "bare watchdog observer"):
        lat = _many_writers_latency(kind, writers, 20, 100.0, duration)
        p50, p99, _worst = _percentiles(lat)
        raw[kind] = {"p50": p50, "p99": p99, "n": len(lat)}
        rows.append([kind, f"{p50 * 1e3:.2f} ms", f"{p99 * 1e3:.2f} ms", f"{len(lat):,}"])
    ratio = raw["statusbridge"]["p99"] / raw["bare watchdog observer"]["p99"]
    rows[0].append(f"{ratio:.2f}x")
    rows[1].append("")
    report.table(
        f"Write -> visible: {writers} writer processes x 20 jobs, 100 updates/s each writer",
        ["reader", "p50", "p99", "writes seen", "p99 ratio"],
        rows,
        "Goal: statusbridge p99 <= 3x a bare watchdog observer seeing the same writers "
        "(which reads and parses each file it is told about).",
    )
    report.raw["many_writers"] = raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = Report(args.quick)
    run_all(report, args.quick, None)


def run_all(report: Report, quick: bool, only: str | None) -> None:
    """The parts of issue 13; ``quick`` sizes keep all of them to about half a minute."""
    if only in (None, "aggregates"):
        bench_aggregates(report, (1_000, 10_000 if quick else 100_000), runs=3 if quick else 5)
        bench_list_batches(report, (500, 2_000) if quick else (1_000, 100_000), 3 if quick else 5)
    if only in (None, "lookup"):
        bench_lookup(report, 10_000 if quick else 100_000, runs=3 if quick else 7)
    if only in (None, "throughput"):
        bench_throughput(report, 200 if quick else 2_000, runs=1 if quick else 3)
    if only in (None, "idle"):
        bench_idle(report, 1_000 if quick else 100_000, window=2.0 if quick else 30.0)
    if only in (None, "writers"):
        bench_many_writers(report, 4 if quick else 8, 1.0 if quick else 5.0)
    if only in (None, "scan"):
        bench_scan(report, 2_000 if quick else 100_000, runs=1 if quick else 3)
    if only in (None, "retention"):
        bench_retention(
            report, 1_000 if quick else 100_000, 100 if quick else 1_000, runs=1 if quick else 3
        )


if __name__ == "__main__":
    main()
