"""What ``BatchManager.start_batch`` costs: the call's return time, and the per-job cost
of a whole batch at two sizes, on a folder, on SQLite and on Redis.

Run: ``python -m bench.batch_start [--quick] [--sizes 2000,10000] [--no-redis]
[--backends folder,sqlite,redis]``.
Figures are for comparison within one run (the per-job ratio of the big batch
against the small one), never a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from statusbridge import BatchManager


def trivial(params: Any) -> Any:
    return params["i"]


@contextlib.contextmanager
def _locations(backend: str) -> Iterator[tuple[str, str]]:
    if backend in ("folder", "sqlite"):
        root = Path(tempfile.mkdtemp(prefix="sb-bench-start-"))
        if backend == "sqlite":
            url = f"sqlite:///{root}/status.db"
            yield url, url
        else:
            yield str(root / "batches"), str(root / "status")
        return
    from bench.redis_backend import redis_server

    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        yield url, url


def one_batch(backend: str, n: int, workers: int = 4) -> tuple[float, float, int]:
    """(start_batch return time, end-to-end time, total seen right after the return)."""
    with _locations(backend) as (batch_dir, status_dir):
        manager = BatchManager(batch_dir, workers, status_dir)
        try:
            batch_id = manager.create_custom_batch([{"i": i} for i in range(n)], "bench")
            t = time.perf_counter()
            manager.start_batch(batch_id, trivial)
            returned = time.perf_counter() - t
            summary = manager.get_batch_status(batch_id)
            total = summary.total if summary is not None else -1
            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                summary = manager.get_batch_status(batch_id)
                if summary is not None and summary.is_done:
                    break
                time.sleep(0.05)
            ended = time.perf_counter() - t
        finally:
            manager.shutdown(wait=True)
    return returned, ended, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated batch sizes")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--backends", default=None, help="comma-separated: folder,sqlite,redis")
    args = parser.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([200, 1000] if args.quick else [2000, 10_000])
    )
    backends = ["folder", "sqlite"] if args.no_redis else ["folder", "sqlite", "redis"]
    if args.backends:
        backends = args.backends.split(",")
    for backend in backends:
        per_job: dict[int, float] = {}
        for n in sizes:
            returned, ended, total = one_batch(backend, n)
            per_job[n] = ended / n
            print(
                f"{backend:6} {n:6d} jobs: start_batch returned after {returned:7.3f} s, "
                f"total right after {total}, all done after {ended:7.2f} s "
                f"({n / ended:6.0f} jobs/s, {per_job[n] * 1e3:.2f} ms/job)"
            )
        if len(sizes) > 1:
            small, big = sizes[0], sizes[-1]
            print(
                f"{backend:6} per-job cost {big} vs {small}: {per_job[big] / per_job[small]:.2f}x"
            )


if __name__ == "__main__":
    main()
