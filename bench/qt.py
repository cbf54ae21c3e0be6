"""Desktop latency: a write in another process -> the Qt model's row updated on the GUI thread.

Run: ``python -m bench.qt [--quick]`` (needs PySide6; uses $DISPLAY, else Qt's offscreen
platform: the path measured — cache thread, queued signal, GUI-thread refresh — is the same).

A writer process updates job "lat" at a fixed rate, each write carrying its number; the
model's ``dataChanged`` handler notes when each number reached the row. Latency of a write:
from the write until its row showed it or a later value. The floor is the cache's own
``subscribe`` callback in the same run (no Qt); the Qt path adds the hand-over to the GUI
thread and the 30 refreshes/s cap. Goal: p99 <= 50 ms. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import _latencies, _percentiles, _run_writer, latency_statusbridge, machine
from statusbridge import StatusCache

GOAL_P99 = 0.050


def latency_qt(rate: float, duration: float, max_refresh_rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sb-qt-") as scratch:
        return _latency_qt(Path(scratch) / "status", rate, duration, max_refresh_rate)


def _latency_qt(
    folder: Path, rate: float, duration: float, max_refresh_rate: float
) -> dict[str, Any]:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from statusbridge.qt import JobTableModel

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(["bench"])
    folder.mkdir()
    seen: list[tuple[float, int]] = []
    refreshes = 0
    with StatusCache(folder) as cache:
        model = JobTableModel(cache, clock_interval=0, max_refresh_rate=max_refresh_rate)

        def on_change(*_: object) -> None:
            row = model.row_of("lat")
            if row is not None:
                i = model.job_at(row).meta.get("i")
                if isinstance(i, int):
                    seen.append((time.time(), i))

        def on_refresh(_: object) -> None:
            nonlocal refreshes
            refreshes += 1

        model.dataChanged.connect(on_change)
        model.rowsInserted.connect(on_change)
        model.refreshed.connect(on_refresh)
        heartbeat = QTimer()  # wakes the idle loop so that the writer's end is noticed
        heartbeat.start(20)
        flags = QEventLoop.ProcessEventsFlag.WaitForMoreEvents

        def idle_gui_loop() -> None:  # the GUI thread idles in Qt's loop, as in an app
            app.processEvents(flags)

        times = _run_writer("statusbridge", folder, rate, duration, poll=idle_gui_loop)
        deadline = time.monotonic() + 5
        while (not seen or seen[-1][1] < len(times) - 1) and time.monotonic() < deadline:
            idle_gui_loop()
        heartbeat.stop()
        model.close()
    lat, missed = _latencies(times, seen)
    return {"lat": lat, "missed": missed, "writes": len(times), "refreshes": refreshes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    duration = 1.5 if args.quick else 5.0
    print(f"# Qt model latency{' (quick)' if args.quick else ''}\n\n{machine()}\n")
    print(
        "| rate | path | p50 ms | p99 ms | max ms | p99 / floor | refreshes/s | goal p99 <= 50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rate in (20.0, 250.0):
        floor = latency_statusbridge(rate, duration)
        floor_p99 = _percentiles(floor["lat"])[1]
        runs = [
            ("cache subscribe callback (floor)", floor),
            ("Qt model row, 30 refreshes/s (default)", latency_qt(rate, duration, 30.0)),
            ("Qt model row, uncapped (1000/s)", latency_qt(rate, duration, 1000.0)),
        ]
        for name, res in runs:
            p50, p99, mx = _percentiles(res["lat"])
            per_s = f"{res['refreshes'] / duration:.0f}" if "refreshes" in res else "-"
            met = "" if "refreshes" not in res else ("met" if p99 <= GOAL_P99 else "**missed**")
            missed = f" ({res['missed']} never seen)" if res["missed"] else ""
            print(
                f"| {rate:g}/s | {name}{missed} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | "
                f"{mx * 1e3:.2f} | {p99 / floor_p99:.1f}x | {per_s} | {met} |"
            )


if __name__ == "__main__":
    main()
