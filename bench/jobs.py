"""Jobs-layer figures: trivial jobs per second, and what report_progress costs.

Run: ``python -m bench.jobs [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from statusbridge import BatchQueue, report_progress
from statusbridge.jobs._context import JobContext, activate, deactivate
from statusbridge.store import StatusStore


def trivial(params: Any) -> int:
    return 1


def jobs_per_second(executor: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        return _jobs_per_second(scratch, executor, n)


def _jobs_per_second(folder: str, executor: str, n: int) -> float:
    with BatchQueue(2, max_completed_jobs=n, status_dir=folder, executor=executor) as queue:  # type: ignore[arg-type]
        warm = queue.submit(trivial)  # process pools start their workers lazily
        queue.wait([warm], timeout=60)
        t = time.perf_counter()
        ids = [queue.submit(trivial) for _ in range(n)]
        queue.wait(ids, timeout=600)
        return n / (time.perf_counter() - t)


def report_costs(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        return _report_costs(scratch, n)


def _report_costs(folder: str, n: int) -> tuple[float, float]:
    store = StatusStore(folder)
    store.update("p", status="running")
    coalesced = JobContext(store, "p", interval=3600.0)
    token = activate(coalesced)
    report_progress(0.0)  # the first report is written; the rest are coalesced
    t = time.perf_counter()
    for i in range(n):
        report_progress(i / n, "working")
    t_coalesced = (time.perf_counter() - t) / n
    deactivate(coalesced, token)
    written = JobContext(store, "p", interval=0.0)
    token = activate(written)
    m = max(n // 50, 200)
    t = time.perf_counter()
    for i in range(m):
        report_progress(i / m, "working")
    t_written = (time.perf_counter() - t) / m
    deactivate(written, token)
    return t_coalesced, t_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 200 if args.quick else 2000
    for executor in ("thread", "process"):
        print(f"trivial jobs/s, 2 {executor} workers: {jobs_per_second(executor, n):8.0f}")
    c, w = report_costs(20_000 if args.quick else 200_000)
    print(
        f"report_progress coalesced {c * 1e6:7.2f} us   written {w * 1e6:7.1f} us"
        f"   ratio {w / c:.0f}x"
    )


if __name__ == "__main__":
    main()
