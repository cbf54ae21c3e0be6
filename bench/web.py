"""``statusbridge.web``: what the event stream costs, as ratios measured in the same run.

Run: ``python -m bench.web [--quick]`` (also a part of ``python -m bench``: ``--only web``).
The server is uvicorn on a thread of this process, on a folder; stream clients (httpx) run
in a child process (``--clients N``), so their work is not counted as the server's.

1. Latency: another process writes one record every 20 ms, stamped with
   ``time.monotonic()`` (one clock for every process on Linux and macOS); the p99 of
   "write → change event read by an httpx client" against "write → visible in the cache"
   (a subscriber of the server's own cache), same writes. Goal ≤ 2x.
2. The cache thread's CPU time per change (``/proc/.../schedstat``, Linux) with 200 stream
   clients attached against none: medians of interleaved rounds, [min..max] of the
   rounds' ratios. Goal ≤ 1.5x.
3. Idle: the whole server process's CPU seconds over 30 s with 50 open streams and no
   writes, and with no stream (the quick run measures 6 s and scales; uvicorn itself
   wakes every 0.1 s). Goal ≤ 0.05 CPU-s.

Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from statusbridge import Snapshot, StatusCache, StatusStore
from statusbridge.web import create_app
from statusbridge.web._server import WebServer

SPAWN = mp.get_context("spawn")
GAP = 0.02  # seconds between the latency writer's writes: each is its own change


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# -- the parts that run elsewhere ----------------------------------------------------------------
def stamped_writes(folder: str, count: int) -> None:
    """A writer process: ``count`` writes of job ``lat``, each stamped with when it started."""
    with StatusStore(folder) as store:
        for n in range(count):
            store.update("lat", message=str(n), meta={"t": time.monotonic()})
            time.sleep(GAP)


async def _clients(url: str, count: int) -> list[float]:
    """``count`` open streams; client 0 notes each ``lat`` change's latency. Prints "ready"
    once every stream has its first state, ends when stdin closes."""
    latencies: list[float] = []
    ready = asyncio.Semaphore(0)
    limits = httpx.Limits(max_connections=count + 10)

    async def one(client: httpx.AsyncClient, index: int) -> None:
        async with client.stream("GET", f"{url}/api/events") as response:
            async for line in response.aiter_lines():
                if line == "event: reset":
                    ready.release()
                elif index == 0 and line.startswith("data: ") and '"id":"lat"' in line:
                    now = time.monotonic()
                    for job in json.loads(line[6:])["jobs"]:
                        if job["id"] == "lat":
                            latencies.append(now - job["meta"]["t"])

    async with httpx.AsyncClient(limits=limits, timeout=None) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(count)]
        for _ in range(count):
            await ready.acquire()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


@contextmanager
def clients(url: str, count: int) -> Iterator[dict[str, list[float]]]:
    """``count`` stream clients in a child process; the dict gets their latencies at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.web", "--clients", str(count), "--url", url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    result: dict[str, list[float]] = {}
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield result
    finally:
        proc.stdin.close()
        result["latencies"] = json.loads(proc.stdout.read() or "[]")
        proc.stdout.close()
        proc.wait(60)


# -- the server ------------------------------------------------------------------------------------
@contextmanager
def serving(folder: Path, cache: StatusCache) -> Iterator[str]:
    app = create_app(folder, cache=cache)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = WebServer(config, app)  # as in ``statusbridge serve``
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(30)


def _thread_cpu(native_id: int) -> float | None:
    """Seconds the thread ran on a CPU (Linux's schedstat, nanoseconds), or None."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return None


def cache_cpu_per_change(folder: Path, cache: StatusCache, changes: int) -> float | None:
    """The cache thread's CPU seconds per change, over ``changes`` writes from this process."""
    native_id = cache._thread.native_id
    if native_id is None:
        return None
    with StatusStore(folder) as store:
        start = _thread_cpu(native_id)
        for n in range(changes):
            before = cache.snapshot().version
            store.update("cpu", message=str(n))
            cache.wait_for_change(before, timeout=10)
        end = _thread_cpu(native_id)
    return None if start is None or end is None else (end - start) / changes


def idle_cpu(seconds: float) -> float:
    """This process's CPU seconds over a quiet window of ``seconds``, per 30 s."""
    start = time.process_time()  # CLOCK_PROCESS_CPUTIME_ID: every thread, not in ticks
    time.sleep(seconds)  # the measurement: nothing happens meanwhile
    return (time.process_time() - start) * 30.0 / seconds


# -- the run ---------------------------------------------------------------------------------------
def measure(quick: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sb-bench-web-"))
    folder = root / "status"
    writes = 150 if quick else 500
    changes = 100 if quick else 300
    rounds = 3 if quick else 5
    idle = 6.0 if quick else 30.0
    raw: dict[str, Any] = {"writes": writes, "changes": changes, "idle_seconds": idle}
    try:
        with StatusCache(folder) as cache, serving(folder, cache) as url:
            seen: list[float] = []

            def visible(snapshot: Snapshot, changed: frozenset[str]) -> None:
                if "lat" in changed:
                    seen.append(time.monotonic() - snapshot["lat"].meta["t"])

            stop = cache.subscribe(visible)
            with clients(url, 1) as received:
                writer = SPAWN.Process(target=stamped_writes, args=(str(folder), writes))
                writer.start()
                writer.join()
                if writer.exitcode != 0:
                    raise RuntimeError(f"the writer process failed (exit {writer.exitcode})")
                while (job := cache.get("lat")) is None or job.message != str(writes - 1):
                    cache.wait_for_change(cache.snapshot().version, timeout=1)
                time.sleep(0.2)  # (not measured) the stream's last event reaches the client
            stop()
            raw["cache_p99"] = _p99(seen)
            raw["stream_p99"] = _p99(received["latencies"])
            raw["cache_p50"] = statistics.median(seen)
            raw["stream_p50"] = statistics.median(received["latencies"])
            raw["stream_events"] = len(received["latencies"])

            # Interleaved rounds, medians: load from other processes hits both alike.
            none, many = [], []
            for _ in range(rounds):
                none.append(cache_cpu_per_change(folder, cache, changes))
                with clients(url, 200):
                    many.append(cache_cpu_per_change(folder, cache, changes))
            known = [(a, b) for a, b in zip(none, many, strict=True) if a and b]
            raw["cpu_none"] = statistics.median(a for a, _ in known) if known else None
            raw["cpu_200"] = statistics.median(b for _, b in known) if known else None
            raw["cpu_ratios"] = [b / a for a, b in known]

            raw["idle_cpu_none_per_30s"] = idle_cpu(idle)
            with clients(url, 50):
                raw["idle_cpu_per_30s"] = idle_cpu(idle)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return raw


def rows(raw: dict[str, Any]) -> list[list[str]]:
    latency = raw["stream_p99"] / raw["cache_p99"]
    cpu = (
        f"{raw['cpu_200'] / raw['cpu_none']:.2f}x "
        f"[{min(raw['cpu_ratios']):.2f}..{max(raw['cpu_ratios']):.2f}]"
        if raw["cpu_none"] and raw["cpu_200"] is not None
        else "n/a (no schedstat)"
    )
    return [
        [
            "write in another process → httpx stream event, p99 vs → visible in the cache, p99",
            f"{raw['stream_p99'] * 1e3:.1f} ms vs {raw['cache_p99'] * 1e3:.1f} ms "
            f"(p50 {raw['stream_p50'] * 1e3:.1f} vs {raw['cache_p50'] * 1e3:.1f})",
            f"{latency:.2f}x",
            "≤ 2x",
        ],
        [
            "cache thread CPU per change, 200 stream clients vs none",
            f"{(raw['cpu_200'] or 0) * 1e6:.0f} µs vs {(raw['cpu_none'] or 0) * 1e6:.0f} µs",
            cpu,
            "≤ 1.5x",
        ],
        [
            "idle server, 50 open streams, CPU per 30 s",
            f"{raw['idle_cpu_per_30s']:.3f} CPU-s vs {raw['idle_cpu_none_per_30s']:.3f} with none "
            f"(over {raw['idle_seconds']:.0f} s)",
            f"{raw['idle_cpu_per_30s'] / raw['idle_cpu_none_per_30s']:.2f}x",
            "≤ 0.05 CPU-s",
        ],
    ]


HEADER = ["figure", "measured", "ratio", "goal"]


def bench_web(report: Any, *, quick: bool) -> None:
    """The ``web`` part of ``python -m bench``."""
    raw = measure(quick)
    report.raw["web"] = raw
    report.table("statusbridge.web: the event stream", HEADER, rows(raw), __doc__.split("\n\n")[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, under a minute")
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients:
        print(json.dumps(asyncio.run(_clients(args.url, args.clients))), flush=True)
        return 0
    from bench.run import machine

    raw = measure(args.quick)
    print(f"# statusbridge.web{' (quick)' if args.quick else ''}\n\n{machine()}\n")
    print("| " + " | ".join(HEADER) + " |\n|---|---|---|---|")
    for row in rows(raw):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
