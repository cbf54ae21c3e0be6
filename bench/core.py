"""Core figures: read cost, write cost, write->visible latency, change cost at scale.

Run: ``python -m bench.core [--quick]``. Prints ratios against baselines measured
in the same run; no thresholds (targets live in the issue tracker and README).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import filelock
import immutables

from statusbridge import BatchJob, Snapshot, StatusCache, StatusStore
from statusbridge.cache._snapshot import Snapshot as _Snapshot
from statusbridge.record import encode_job
from statusbridge.store import write_atomic


def per_call(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Median seconds per call over ``repeat`` runs of ``n`` calls."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n)
    return statistics.median(runs)


def us(x: float) -> str:
    return f"{x * 1e6:8.2f} us"


def bench_reads(quick: bool) -> None:
    folder = tempfile.mkdtemp()
    store = StatusStore(folder)
    for i in range(1000):
        store.update(f"j{i}", progress=0.5)
    plain = {f"j{i}": BatchJob(f"j{i}") for i in range(1000)}
    n = 20_000 if quick else 200_000
    with StatusCache(folder) as cache:
        t_get = per_call(lambda: cache.snapshot().get("j500"), n)
        t_dict = per_call(lambda: plain.get("j500"), n)
        print(
            f"snapshot().get()            {us(t_get)}   plain dict.get {us(t_dict)}"
            f"   ratio {t_get / t_dict:.1f}x"
        )
        snap = cache.snapshot()
        t_render = per_call(lambda: [j.progress for j in snap.values()], 200)
        t_dict_render = per_call(lambda: [j.progress for j in plain.values()], 200)
        print(
            f"render 1,000 jobs           {us(t_render)}   plain dict     {us(t_dict_render)}"
            f"   ratio {t_render / t_dict_render:.1f}x"
        )


def bench_writes(quick: bool) -> None:
    folder = Path(tempfile.mkdtemp())
    store = StatusStore(folder)
    job = store.update("w", status="running", progress=0.1, meta={"step": 1})
    data = encode_job(job)
    target = folder / "bare.json"
    n = 500 if quick else 3000
    counter = iter(range(10**9))
    t_update = per_call(lambda: store.update("w", progress=(next(counter) % 100) / 100), n)
    t_bare = per_call(lambda: write_atomic(target, data), n)
    print(
        f"StatusStore.update()        {us(t_update)}   bare temp+replace {us(t_bare)}"
        f"   ratio {t_update / t_bare:.2f}x"
    )
    lock = filelock.FileLock(str(folder / ".bench.lock"), thread_local=False)

    def fl() -> None:
        lock.acquire()
        lock.release()

    def stripe() -> None:
        with store._locks.hold("w", 10):
            pass

    t_fl = per_call(fl, n * 4)
    t_stripe = per_call(stripe, n * 4)
    print(
        f"filelock.FileLock acquire+release {us(t_fl)}   our stripe hold {us(t_stripe)}"
        f"   ratio {t_fl / t_stripe:.1f}x"
    )


def _writer(folder: str, rate: float, count: int, start_evt: str) -> None:
    store = StatusStore(folder)
    store.update("lat", meta={"t": time.time()})
    Path(start_evt).touch()
    interval = 1.0 / rate
    nxt = time.perf_counter()
    for i in range(count):
        nxt += interval
        while (delay := nxt - time.perf_counter()) > 0:
            time.sleep(delay)
        store.update("lat", progress=(i % 100) / 100, meta={"t": time.time()})


def bench_latency(quick: bool) -> None:
    folder = tempfile.mkdtemp()
    count = 500 if quick else 2500
    for rate in (250.0, 1000.0):
        lat: list[float] = []
        with StatusCache(folder) as cache:

            def seen(snap: Snapshot, changed: frozenset[str]) -> None:
                job = snap.get("lat")
                if job is not None and "t" in job.meta:
                    lat.append(time.time() - job.meta["t"])

            ready = os.path.join(folder, "..ready")
            if os.path.exists(ready):
                os.unlink(ready)
            cache.subscribe(seen)
            p = mp.get_context("spawn").Process(target=_writer, args=(folder, rate, count, ready))
            p.start()
            p.join()
            deadline = time.monotonic() + 5
            while (j := cache.get("lat")) is None or j.seq < count + 1:
                if time.monotonic() > deadline:
                    break
                cache.wait_for_change(cache.version, 0.1)
        lat.sort()
        p50 = lat[len(lat) // 2]
        p99 = lat[int(len(lat) * 0.99)]
        print(
            f"write->visible @ {rate:5.0f}/s    p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
            f"  max {lat[-1] * 1e3:6.2f} ms  (n={len(lat)} snapshots for {count} writes)"
        )


def bench_change_at_scale(quick: bool) -> None:
    for size in (100, 100_000):
        jobs = immutables.Map(
            {f"j{i}": BatchJob(f"j{i}", batch_id=f"b{i % 10}") for i in range(size)}
        )
        snap = _Snapshot(jobs, immutables.Map(), 1)
        newjob = BatchJob("j5", progress=0.5)

        def apply() -> None:
            m = snap._jobs.mutate()
            m["j5"] = newjob
            _Snapshot(m.finish(), snap._batches, snap.version + 1)

        t = per_call(apply, 20_000 if quick else 100_000)
        print(f"apply one change at {size:>7,} jobs {us(t)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    bench_reads(args.quick)
    bench_writes(args.quick)
    bench_change_at_scale(args.quick)
    bench_latency(args.quick)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
