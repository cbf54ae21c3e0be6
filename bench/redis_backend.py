"""Redis backend figures (``python -m bench --only redis``), each against a floor of the same run.

- write -> visible, from another process: statusbridge (RedisStore.update ->
  RedisCache subscriber) against a raw XADD -> XREAD BLOCK round trip (goal: p99 <= 3x);
- the cost of one ``update()`` against a raw Lua HSET + XADD call (goal: <= 2x);
- updates per second with 1, 4 and 8 writer processes, folder and Redis side by side.

Starts its own redis-server (no persistence) on a free port of 16300-16399 and
stops it by pid; without redis-server the part is skipped with a note.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from statusbridge import Snapshot, StatusCache, StatusStore

__all__ = ["bench_redis"]

PORTS = range(16300, 16400)
RAW_LUA = """
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'updated_at', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'id', ARGV[3])
return 1
"""


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server; yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="sb-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# -- child processes (module level: spawn imports them) ---------------------------------------


def paced_writer(kind: str, location: str, rate: float, duration: float, ready: str) -> None:
    """Write at ``rate`` for ``duration`` s, each write carrying its index and wall time."""
    import redis

    if kind == "statusbridge":
        store = StatusStore(location)
        store.update("lat", progress=0.0)

        def write(i: int) -> None:
            store.update("lat", meta={"i": i})
    else:
        client = redis.Redis.from_url(location)
        client.ping()

        def write(i: int) -> None:
            client.xadd("floor", {"i": i}, maxlen=10_000, approximate=True)

    Path(ready).touch()
    time.sleep(0.2)  # let the reader settle on its blocking read (pacing, not a wait for state)
    start = time.perf_counter()
    n = int(rate * duration)
    times: list[float] = []
    for i in range(n):
        target = start + i / rate
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        times.append(time.time())
        write(i)
    Path(ready + ".times").write_text(json.dumps(times))


def count_writer(location: str, worker: int, duration: float, go: str, out: str) -> None:
    """Update this worker's own jobs flat out for ``duration`` s; write the count to ``out``."""
    store = StatusStore(location)
    store.update(f"w{worker}", progress=0.0)
    while not Path(go).exists():
        time.sleep(0.001)  # a poll interval while waiting for the start signal
    end = time.perf_counter() + duration
    n = 0
    while time.perf_counter() < end:
        store.update(f"w{worker}-{n % 10}", progress=(n % 100) / 100)
        n += 1
    Path(out).write_text(str(n))


# -- measurements ---------------------------------------------------------------------------


def _spawn() -> Any:
    import multiprocessing as mp

    return mp.get_context("spawn")


def _latency(kind: str, location: str, rate: float, duration: float) -> list[float]:
    """Latency (s) of every write: until a reader in this process saw it or a later one."""
    import redis

    from bench.run import _latencies

    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-lat-"))
    ready = tmp / "ready"
    proc = _spawn().Process(target=paced_writer, args=(kind, location, rate, duration, str(ready)))
    if kind == "statusbridge":
        cache = StatusCache(location)

        def on_change(snap: Snapshot, changed: frozenset[str]) -> None:
            job = snap.get("lat")
            if job is not None and "i" in job.meta:
                seen.append((time.time(), job.meta["i"]))

        cache.subscribe(on_change)
        proc.start()
        proc.join(duration + 60)
        time.sleep(0.5)  # the last writes drain (pacing: the writer has exited)
        cache.close()
    else:
        client = redis.Redis.from_url(location)

        def reader() -> None:
            last = "$"
            while not stop.is_set():
                reply = client.xread({"floor": last}, block=200)
                now = time.time()
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        seen.append((now, int(fields[b"i"])))
                        last = entry_id

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.05)  # the reader's first XREAD is in place before the writer starts
        proc.start()
        proc.join(duration + 60)
        time.sleep(0.3)
        stop.set()
        thread.join()
        client.close()
    times = json.loads((tmp / "ready.times").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    lat, _missed = _latencies(times, seen)
    return lat


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def _throughput(location: str, writers: int, duration: float) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-tp-"))
    go = tmp / "go"
    ctx = _spawn()
    procs = [
        ctx.Process(target=count_writer, args=(location, w, duration, str(go), str(tmp / f"n{w}")))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0 + 0.3 * writers)  # children import statusbridge (pacing the start, not a wait)
    go.touch()
    for p in procs:
        p.join(duration + 120)
    total = sum(int((tmp / f"n{w}").read_text()) for w in range(writers))
    shutil.rmtree(tmp, ignore_errors=True)
    return total / duration


def bench_redis(report: Any, *, quick: bool) -> None:
    try:
        server = redis_server()
        port = server.__enter__()
    except FileNotFoundError:
        report.table("Redis backend", ["note"], [["skipped: redis-server is not installed"]])
        return
    try:
        _bench(report, port, quick=quick)
    finally:
        server.__exit__(None, None, None)


def _bench(report: Any, port: int, *, quick: bool) -> None:
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    raw: dict[str, Any] = {}
    duration = 1.5 if quick else 5.0
    rows = []
    for rate in (200.0, 1000.0):
        floor = _latency("floor", url, rate, duration)
        ours = _latency("statusbridge", f"{url}?prefix=lat{int(rate)}", rate, duration)
        f99, o99 = _pct(floor, 0.99), _pct(ours, 0.99)
        for name, lat in (("raw XADD -> XREAD BLOCK (floor)", floor), ("statusbridge", ours)):
            rows.append([f"{rate:g}/s", name, f"{_pct(lat, 0.5) * 1e3:.2f}",
                         f"{_pct(lat, 0.99) * 1e3:.2f}", f"{_pct(lat, 0.99) / f99:.1f}x",
                         str(len(lat))])  # fmt: skip
        raw[f"latency/{rate:g}"] = {"floor_p99": f99, "statusbridge_p99": o99, "ratio": o99 / f99}
    report.table(
        "Redis: write -> visible from another process (ms)",
        ["rate", "path", "p50", "p99", "p99 / floor", "seen"],
        rows,
        "A writer process updates one job at the rate; this process sees it through a "
        "StatusCache subscriber (statusbridge) or a bare blocking XREAD (floor). "
        "Goal: statusbridge p99 <= 3x the floor.",
    )

    store = StatusStore(f"{url}?prefix=cost")
    client = redis.Redis(port=port)
    script = client.register_script(RAW_LUA)
    store.update("j", progress=0.0)
    runs, inner = (7, 200) if quick else (15, 1000)

    now = json.dumps("2026-01-01T00:00:00+00:00")

    def floor_call() -> None:
        script(keys=["{raw}:job:j", "{raw}:feed"], args=["0.5", now, "j"])

    def our_call() -> None:
        store.update("j", progress=0.5)

    # Two stores taking turns on one job: each finds the other's write, so every update
    # takes the long path (the server builds the record and the client decodes it).
    rival = StatusStore(f"{url}?prefix=cost")
    turns = [store, rival]

    def taking_turns() -> None:
        turns.reverse()
        turns[0].update("j", progress=0.5)

    # Interleaved, so that load from other processes on the machine hits both alike.
    samples: dict[str, list[float]] = {"floor": [], "ours": [], "turns": []}
    for _ in range(runs):
        for name, fn in (("floor", floor_call), ("ours", our_call), ("turns", taking_turns)):
            fn()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t) / inner)
    floor_cost = sorted(samples["floor"])[runs // 2]
    our_cost = sorted(samples["ours"])[runs // 2]
    turns_cost = sorted(samples["turns"])[runs // 2]
    report.table(
        "Redis: cost of one write (us, median)",
        ["call", "us", "vs floor"],
        [
            ["raw Lua HSET + XADD (floor)", f"{floor_cost * 1e6:.2f}", "1.00x"],
            ["StatusStore.update()", f"{our_cost * 1e6:.2f}", f"{our_cost / floor_cost:.2f}x"],
            [
                "update(), two stores taking turns",
                f"{turns_cost * 1e6:.2f}",
                f"{turns_cost / floor_cost:.2f}x",
            ],
        ],
        "Goal: update() <= 2x the raw script (same server, same connection reuse). A store "
        "that wrote the job last sends the new record whole; after another writer the "
        "server builds it (last row).",
    )
    raw["write_cost"] = {
        "floor": floor_cost,
        "update": our_cost,
        "ratio": our_cost / floor_cost,
        "update_after_another_writer": turns_cost,
        "ratio_after_another_writer": turns_cost / floor_cost,
    }
    rival.close()
    store.close()
    client.close()

    tp_duration = 1.0 if quick else 3.0
    rows = []
    for writers in (1, 4, 8):
        folder = Path(tempfile.mkdtemp(prefix="sb-bench-tp-")) / "status"
        on_folder = _throughput(str(folder), writers, tp_duration)
        on_redis = _throughput(f"{url}?prefix=tp{writers}", writers, tp_duration)
        shutil.rmtree(folder.parent, ignore_errors=True)
        rows.append([str(writers), f"{on_folder:,.0f}", f"{on_redis:,.0f}"])
        raw[f"throughput/{writers}"] = {"folder": on_folder, "redis": on_redis}
    report.table(
        "Updates per second, N writer processes (all on this machine)",
        ["writers", "folder", "Redis"],
        rows,
        "Each writer updates its own jobs flat out; the machine's cores are shared with the "
        "server (Redis) or the file system (folder).",
    )
    report.raw["redis"] = raw
