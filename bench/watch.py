"""``statusbridge watch``: what one redraw costs as finished jobs pile up.

Run: ``python -m bench.watch [--quick]``. A folder holds N finished jobs and 5 running
ones; after each write to a running job (a new snapshot), the live view's redraw is
timed: the index takes the changed id, then one 80x24 frame is rendered (rich, into
memory). The baseline, in the same run, is the plain full table the old ``watch`` drew:
every job, every time. Goal: the live redraw stays flat in N (the counts come from
``Snapshot.summary``, which is O(changes) once issue 13 is in). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench.run import machine
from statusbridge import StatusCache, StatusStore
from statusbridge.cache._snapshot import summarize
from statusbridge.cli._live import JobIndex, render
from statusbridge.cli._render import job_table, summary_line
from statusbridge.record._model import utc_now


def redraws(finished: int, rounds: int) -> tuple[float, float]:
    """Median seconds per redraw: (live view, old full table)."""
    with tempfile.TemporaryDirectory(prefix="sb-watch-") as scratch:
        return _redraws(Path(scratch) / "status", finished, rounds)


def _redraws(folder: Path, finished: int, rounds: int) -> tuple[float, float]:
    store = StatusStore(folder)
    for i in range(finished):
        store.update(f"done-{i:06d}", status="completed", batch_id="b")
    for i in range(5):
        store.update(f"busy-{i}", status="running", progress=0.0, batch_id="b")
    live: list[float] = []
    full: list[float] = []
    with StatusCache(folder) as cache:
        index = JobIndex(None, ())
        index.load(cache.snapshot())
        for r in range(rounds):
            before = cache.snapshot().version
            store.update(f"busy-{r % 5}", progress=(r % 100) / 100)
            snap = cache.wait_for_change(before, timeout=10)
            now = utc_now()
            t = time.perf_counter()
            index.apply(snap, {f"busy-{r % 5}"})
            console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
            console.print(render(snap, index, folder="f", now=now, height=23, width=80, invalid={}))
            live.append(time.perf_counter() - t)
            t = time.perf_counter()
            jobs = list(snap.values())
            job_table(jobs, now, width=80) + summary_line(summarize(jobs))
            full.append(time.perf_counter() - t)
    return statistics.median(live), statistics.median(full)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, a few seconds")
    args = parser.parse_args(argv)
    sizes = [200, 2_000] if args.quick else [1_000, 10_000]
    rounds = 20 if args.quick else 50
    print(f"# statusbridge watch: one redraw\n\n{machine()}\n")
    print("| finished jobs | live view (rich, 80x24) | old full table | live / old |")
    print("|---|---|---|---|")
    for n in sizes:
        live, full = redraws(n, rounds)
        print(f"| {n:,} | {live * 1e3:.2f} ms | {full * 1e3:.2f} ms | {live / full:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
