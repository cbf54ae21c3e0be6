"""docs/metrics.png: what ``statusbridge metrics`` serves while a batch runs, from real scrapes.

Run: ``python -m bench.metrics_plot [--out docs/metrics.png] [--jobs 36]`` (needs matplotlib
and prometheus-client). A child process runs a batch through a ``BatchQueue`` (3 at a time,
random durations, some failures); the real command serves ``/metrics`` on a free port; this
process scrapes it every 0.2 s over HTTP and plots jobs per status over time and the
duration histogram of the last scrape. Nothing is simulated on the reading side.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from statusbridge import BatchQueue, BatchStatus, report_progress
from statusbridge.display import STATUS_COLOURS

BUCKETS = "0.5,1,1.5,2,3,4,6"
INTERVAL = 0.2


def _work(params: dict[str, Any]) -> str:
    steps = 10
    for step in range(1, steps + 1):
        time.sleep(params["seconds"] / steps)  # the simulated work itself
        report_progress(step / steps, f"step {step}/{steps}")
        if params["fail"] and step == steps // 2:
            raise RuntimeError("simulated failure")
    return "ok"


def run_batch(folder: str, jobs: int, seed: int) -> None:
    """The writer: a queue in its own process, 3 jobs at a time."""
    rng = random.Random(seed)
    with BatchQueue(max_concurrent=3, status_dir=folder) as queue:
        for i in range(jobs):
            params = {"seconds": rng.lognormvariate(0.3, 0.5), "fail": rng.random() < 0.1}
            queue.submit(_work, params, job_id=f"job-{i:02d}", batch_id="nightly")
        queue.shutdown(wait=True)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="docs/metrics.png")
    parser.add_argument("--jobs", type=int, default=36)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sb-metrics-")) / "status"
    folder.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "statusbridge", "metrics", "--dir", str(folder),
         "--port", "0", "--buckets", BUCKETS],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    url = server.stdout.readline().split()[1]
    writer = multiprocessing.get_context("spawn").Process(
        target=run_batch, args=(str(folder), args.jobs, args.seed)
    )
    series: list[tuple[float, dict[str, float]]] = []
    try:
        start = time.monotonic()
        writer.start()
        last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while True:
            last = scrape(url)
            counts = {
                s.value: last[("statusbridge_jobs", (("status", s.value),))] for s in BatchStatus
            }
            series.append((time.monotonic() - start, counts))
            finished = counts["completed"] + counts["failed"] + counts["cancelled"]
            if not writer.is_alive() and finished == args.jobs:
                break
            if writer.exitcode or time.monotonic() - start > 300:
                raise SystemExit(f"the writer failed (exit code {writer.exitcode}) or hung")
            time.sleep(INTERVAL)  # the scrape interval
        writer.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder.parent, ignore_errors=True)
    plot(series, last, Path(args.out), len(series))
    print(f"{len(series)} scrapes of {url}; wrote {args.out}")


def plot(
    series: list[tuple[float, dict[str, float]]],
    last: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    out: Path,
    scrapes: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), width_ratios=[1.6, 1])
    times = [t for t, _ in series]
    for status in BatchStatus:
        left.plot(
            times,
            [c[status.value] for _, c in series],
            label=status.value,
            color=STATUS_COLOURS[status],
            linewidth=2,
        )
    left.set_title("statusbridge_jobs{status}")
    left.set_xlabel(f"seconds ({scrapes} scrapes, every {INTERVAL} s)")
    left.set_ylabel("jobs")
    left.legend(ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    left.grid(alpha=0.3)

    bounds = [float(b) for b in BUCKETS.split(",")]
    cumulative = [
        last[("statusbridge_job_duration_seconds_bucket", (("le", repr(b)),))] for b in bounds
    ]
    cumulative.append(last[("statusbridge_job_duration_seconds_bucket", (("le", "+Inf"),))])
    per_bucket = [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
    labels = [f"≤{b:g}" for b in bounds] + [f">{bounds[-1]:g}"]
    right.bar(labels, per_bucket, color="#4b5563")  # finished jobs of every outcome
    count = last[("statusbridge_job_duration_seconds_count", ())]
    total = last[("statusbridge_job_duration_seconds_sum", ())]
    right.set_title("statusbridge_job_duration_seconds")
    right.set_xlabel(f"seconds, started → finished (n={count:g}, mean {total / count:.2f} s)")
    right.set_ylabel("jobs")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle("statusbridge metrics: real scrapes while a batch of jobs ran (3 at a time)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
