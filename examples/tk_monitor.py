"""A job monitor window in plain Tk: the standard library and statusbridge, nothing else.

For applications that cannot add Qt (``statusbridge gui`` is the full-featured
window). Tk, like every UI toolkit, must only be touched from its own thread,
so the hand-over is explicit:

- ``StatusCache.subscribe`` calls ``on_change`` on the cache's thread: it only
  puts ``(snapshot, changed_ids)`` on a ``queue.Queue``;
- ``root.after`` runs ``pump`` on the Tk thread every 50 ms: it drains the queue
  and updates the rows of the changed jobs (and, once a second, the times of
  running ones).

Run it beside anything that writes the folder, e.g. ``statusbridge simulate``::

    python examples/tk_monitor.py --dir batch_status
    python examples/tk_monitor.py --dir batch_status --exit-after 10   # demos, tests

It prints ``shown <job id> <state>`` each time a job appears or changes state.
"""

from __future__ import annotations

import argparse
import queue
import time
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Set
from datetime import UTC, datetime
from tkinter import ttk

from statusbridge import BatchJob, BatchStatus, Snapshot, StatusCache, StatusStore
from statusbridge.display import (
    STATUS_COLOURS,
    done_text,
    elapsed_seconds,
    eta_seconds,
    floor_share,
    format_duration,
    job_share,
    percent,
    short_id,
    state_label,
)
from statusbridge.jobs import request_cancel

COLUMNS = ("batch", "state", "progress", "elapsed", "eta", "message")
WIDTHS = (110, 90, 180, 80, 80, 300)
JOB_WIDTH = 170
PUMP_MS = 50


def creation_order(job: BatchJob | None, job_id: str) -> tuple[float, str]:
    """New rows are appended oldest first (a removed job sorts anywhere: it has no row)."""
    created = job.created_at.timestamp() if job is not None and job.created_at else 0.0
    return (created, job_id)


def progress_text(job: BatchJob) -> str:
    progress = job_share(job)  # full, and 100%, only once the job completed
    if progress is None:
        return ""
    filled = floor_share(progress, 10)
    return f"{'█' * filled}{'░' * (10 - filled)} {percent(progress):>4}"


class TkMonitor:
    def __init__(self, root: tk.Tk, folder: str) -> None:
        self.root = root
        self.folder = folder
        self.store: StatusStore | None = None  # opened on the first cancel: viewing only reads
        self.inbox: queue.Queue[tuple[Snapshot, Set[str]]] = queue.Queue()
        self.cache = StatusCache(folder)
        self.states: dict[str, str] = {}
        self.last_tick = 0.0

        root.title(f"statusbridge — {folder}")
        top = ttk.Frame(root, padding=6)
        top.pack(fill="x")
        self.summary = ttk.Label(top)
        self.summary.pack(side="left")
        ttk.Button(top, text="Cancel selected", command=self.cancel_selected).pack(side="right")
        self.tree = ttk.Treeview(root, columns=COLUMNS, height=14)
        self.tree.heading("#0", text="job", anchor="w")
        self.tree.column("#0", width=JOB_WIDTH)
        # Tk clips without a mark: ids are shortened as in every view, keeping their tail.
        self.id_chars = max(8, JOB_WIDTH // max(1, tkfont.nametofont("TkDefaultFont").measure("0")))
        for name, width in zip(COLUMNS, WIDTHS, strict=True):
            self.tree.heading(name, text=name, anchor="w")
            self.tree.column(name, width=width, anchor="w")
        for status, colour in STATUS_COLOURS.items():
            self.tree.tag_configure(status.value, foreground=colour)
        self.tree.pack(fill="both", expand=True, padx=6, pady=(0, 6))

        # The cache thread only enqueues; everything below runs on the Tk thread.
        self.unsubscribe = self.cache.subscribe(self.on_change)
        snapshot = self.cache.snapshot()
        self.show(snapshot, set(snapshot.keys()))
        print("ready", flush=True)
        root.after(PUMP_MS, self.pump)

    def on_change(self, snapshot: Snapshot, changed: Set[str]) -> None:  # the cache's thread
        self.inbox.put((snapshot, changed))

    def pump(self) -> None:  # the Tk thread
        latest: Snapshot | None = None
        changed: set[str] = set()
        while True:
            try:
                snapshot, ids = self.inbox.get_nowait()
            except queue.Empty:
                break
            latest = snapshot
            changed |= ids
        now = time.monotonic()
        if now - self.last_tick >= 1.0:  # the clock moved: refresh times of running jobs
            self.last_tick = now
            latest = latest or self.cache.snapshot()
            changed |= {i for i, state in self.states.items() if state == "running"}
        if latest is not None:
            self.show(latest, changed)
        self.root.after(PUMP_MS, self.pump)

    def show(self, snapshot: Snapshot, changed: Set[str]) -> None:
        now = datetime.now(UTC)
        for job_id in sorted(changed, key=lambda i: creation_order(snapshot.get(i), i)):
            job = snapshot.get(job_id)
            if job is None:
                if self.tree.exists(job_id):
                    self.tree.delete(job_id)
                self.states.pop(job_id, None)
                continue
            eta = eta_seconds(job, now)
            values = (
                short_id(job.batch_id or "", self.id_chars * WIDTHS[0] // JOB_WIDTH - 1),
                state_label(job),
                progress_text(job),
                format_duration(elapsed_seconds(job, now)),
                "" if eta is None else f"~{format_duration(eta)}",
                (job.error_message or job.message).replace("\n", " "),
            )
            if self.tree.exists(job_id):
                self.tree.item(job_id, values=values, tags=(job.status.value,))
            else:
                text = short_id(job_id, self.id_chars - 1)
                self.tree.insert("", "end", iid=job_id, text=text, values=values,
                                 tags=(job.status.value,))  # fmt: skip
            if self.states.get(job_id) != job.status.value:
                self.states[job_id] = job.status.value
                print(f"shown {job_id} {job.status.value}", flush=True)
        summary = snapshot.summary()
        counts = ", ".join(
            f"{summary.counts[s]} {s.value}" for s in BatchStatus if summary.counts[s]
        )
        completed = percent(summary.completed_share)  # 100% only when every job completed
        self.summary.configure(
            text=f"{summary.total} jobs  {counts}  —  {completed} completed, {done_text(summary)}"
        )

    def cancel_selected(self) -> None:
        if self.store is None:
            self.store = StatusStore(self.folder)
        for job_id in self.tree.selection():
            if request_cancel(self.store, job_id):
                print(f"cancel requested: {job_id}", flush=True)

    def close(self) -> None:
        self.unsubscribe()
        self.cache.close()
        if self.store is not None:
            self.store.close()
        self.root.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description="A plain-Tk statusbridge monitor.")
    parser.add_argument("--dir", default="batch_status", help="status folder")
    parser.add_argument("--exit-after", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    root = tk.Tk()
    monitor = TkMonitor(root, args.dir)
    root.protocol("WM_DELETE_WINDOW", monitor.close)
    if args.exit_after is not None:
        root.after(round(args.exit_after * 1000), monitor.close)
    root.mainloop()


if __name__ == "__main__":
    main()
