"""``statusbridge watch`` on a terminal: one screen redrawn in place with rich's ``Live``.

Active jobs first (running, then pending), finished ones collapsed into counts
plus the few most recent; the whole view fits the terminal, so the header never
scrolls away. A redraw costs O(active jobs + changes), not O(all jobs): counts
come from ``Snapshot.summary`` and the active jobs from an index that the
cache's change notifications keep current. Colours follow
``display.STATUS_COLOURS``; rich leaves them out when ``NO_COLOR`` is set or
the terminal has none. Text from records goes through ``printable`` and into
rich ``Text`` objects, never into markup.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.cli._render import bar, printable
from statusbridge.display import (
    STATUS_COLOURS,
    done_text,
    elapsed_seconds,
    eta_seconds,
    format_duration,
    job_share,
    short_id,
    state_label,
)
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._model import utc_now
from statusbridge.store._files import classify_name

__all__ = ["JobIndex", "render", "run_live"]

ACTIVE = (BatchStatus.RUNNING, BatchStatus.PENDING)
RECENT_FINISHED = 20  # finished jobs remembered for the "recently finished" rows


class JobIndex:
    """The active jobs and the most recently finished ones of a (filtered) view.

    Built from one snapshot, then kept current from changed job ids: the cost of
    keeping it does not grow with the number of finished jobs.
    """

    def __init__(self, batch: str | None, states: Collection[BatchStatus]) -> None:
        self.batch = batch
        self.states = frozenset(states) or frozenset(BatchStatus)
        self.active: dict[str, BatchJob] = {}
        self.finished: dict[str, BatchJob] = {}

    def _wanted(self, job: BatchJob | None) -> bool:
        return (
            job is not None
            and (self.batch is None or job.batch_id == self.batch)
            and job.status in self.states
        )

    def load(self, snapshot: Snapshot) -> None:
        jobs = snapshot.batch(self.batch) if self.batch else snapshot.values()
        self.active.clear()
        self.finished.clear()
        for job in jobs:
            self._put(job)

    def apply(self, snapshot: Snapshot, changed: Collection[str]) -> None:
        for job_id in changed:
            self.active.pop(job_id, None)
            self.finished.pop(job_id, None)
            job = snapshot.get(job_id)
            if job is not None:
                self._put(job)

    def _put(self, job: BatchJob) -> None:
        if not self._wanted(job):
            return
        if not job.is_finished:
            self.active[job.id] = job
            return
        self.finished[job.id] = job
        if len(self.finished) > RECENT_FINISHED:
            oldest = min(self.finished.values(), key=_finished_at)
            del self.finished[oldest.id]


def _finished_at(job: BatchJob) -> tuple[datetime, str]:
    when = job.completed_at or job.updated_at or job.created_at
    return (when or datetime.min.replace(tzinfo=utc_now().tzinfo), job.id)


def _style(status: BatchStatus) -> str:
    return f"bold {STATUS_COLOURS[status]}"


def _row(job: BatchJob, now: datetime, id_width: int, batch: str | None) -> tuple[Text, ...]:
    text = job.error_message or job.message or ""
    return (
        Text(printable(short_id(job.id, id_width, batch_id=batch)), no_wrap=True),
        Text(state_label(job), style=_style(job.status)),
        Text(bar(job_share(job)), no_wrap=True),
        Text(format_duration(elapsed_seconds(job, now)), justify="right"),
        Text(format_duration(eta_seconds(job, now)), justify="right"),
        Text(printable(" ".join(text.split())), overflow="ellipsis", no_wrap=True),
    )


def render(
    snapshot: Snapshot,
    index: JobIndex,
    *,
    folder: str,
    now: datetime,
    height: int,
    width: int,
    invalid: Mapping[str, str],
) -> RenderableType:
    """One screen: header, counts, active jobs, recently finished, within ``height`` lines."""
    summary = snapshot.summary(index.batch)
    scope = f" · batch {printable(index.batch)}" if index.batch else ""
    if index.states != frozenset(BatchStatus):
        scope += " · " + ",".join(s.value for s in BatchStatus if s in index.states)
    # The folder goes last: on a narrow terminal it is what gets cut.
    header = Text(f"statusbridge watch{scope}", style="bold", no_wrap=True, overflow="ellipsis")
    header.append(f"  {now:%H:%M:%S} UTC  Ctrl-C to stop  {printable(folder)}", style="dim")
    counts = Text(f"{summary.total} jobs: ", no_wrap=True)
    for status in (*ACTIVE, BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED):
        counts.append(f"{summary.counts[status]} {status.value}", style=_style(status))
        counts.append("  ")
    overall = Text(
        f"overall {bar(summary.completed_share, 20)}  {done_text(summary)}", no_wrap=True
    )
    lines: list[RenderableType] = [header, counts, overall]
    for name in sorted(invalid)[:2]:
        lines.append(Text(f"! {printable(name)}: {printable(invalid[name])}", style="red"))

    active = sorted(
        index.active.values(),
        key=lambda j: (j.status is not BatchStatus.RUNNING, j.created_at or now, j.id),
    )
    finished = sorted(index.finished.values(), key=_finished_at, reverse=True)
    # The table's header row, one line per job, and "and N more" when some do not fit.
    room = max(1, height - len(lines) - 1)
    shown_active = active if len(active) <= room else active[: max(0, room - 1)]
    hidden = len(active) - len(shown_active)
    shown_finished = [] if hidden else finished[: room - len(shown_active)]
    shown = [*shown_active, *shown_finished]
    # Ids keep their distinguishing tail (display.short_id); the message gets the room left.
    ids = [short_id(j.id, batch_id=index.batch) for j in shown]
    id_width = min(max([2, *(len(i) for i in ids)]), max(12, width // 4))
    table = Table(
        box=None,
        pad_edge=False,
        collapse_padding=True,  # one space between columns: the message gets the room
        expand=True,
        show_edge=False,
        header_style="bold",
    )
    table.add_column("ID", no_wrap=True, width=id_width)
    table.add_column("STATE", no_wrap=True, min_width=9)
    table.add_column("PROGRESS", no_wrap=True, min_width=17)
    table.add_column("ELAPSED", no_wrap=True, justify="right")
    table.add_column("ETA", no_wrap=True, justify="right")
    table.add_column("MESSAGE", ratio=4, no_wrap=True, overflow="ellipsis")
    for job in shown:
        table.add_row(*_row(job, now, id_width, index.batch))
    if not active and not finished:
        lines.append(Text("no jobs yet" if not summary.total else "no job matches the filter"))
    else:
        lines.append(table)
    if hidden:
        lines.append(Text(f"… and {hidden} more active job(s)", style="dim"))
    return Group(*lines)


@contextlib.contextmanager
def _no_echo(out: TextIO) -> Iterator[None]:
    """Keep the terminal from echoing what is typed (``^C``) while the screen is redrawn.

    The echo lands at the cursor, the end of a full-width last line: it wraps to the next
    line, and rich's final redraw, which counts lines up from where it left the cursor,
    started one line low and left the header on the screen twice.
    """
    try:
        import termios

        fd = out.fileno()
        before = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, io.UnsupportedOperation):
        yield  # not a terminal (a pipe, a file, Windows): nothing is echoed into it
        return
    quiet = list(before)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)  # lflags; Ctrl-C still interrupts (ISIG)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


def run_live(
    cache: StatusCache,
    folder: str,
    out: TextIO,
    *,
    batch: str | None,
    states: Collection[BatchStatus],
    interval: float,
    until_done: bool,
) -> None:
    """Redraw in place until Ctrl-C (or until no job is active, with ``until_done``)."""
    console = Console(file=out, highlight=False, emoji=False)
    index = JobIndex(batch, states)
    changed: set[str] = set()
    lock = threading.Lock()

    def note(snapshot: Snapshot, ids: frozenset[str]) -> None:  # the cache's thread
        with lock:
            changed.update(ids)

    unsubscribe = cache.subscribe(note)
    try:
        snap = cache.snapshot()
        index.load(snap)

        def frame() -> RenderableType:
            files = cache.health().invalid_files
            invalid = {n: r for n, r in files.items() if classify_name(n) == "record"}
            return render(
                snap,
                index,
                folder=str(folder),
                now=utc_now(),
                height=console.size.height - 1,
                width=console.size.width,
                invalid=invalid,
            )

        with _no_echo(out), Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                if until_done and snap.summary(batch).is_done:
                    return
                cache.wait_for_change(snap.version, timeout=interval)
                with lock:
                    ids = frozenset(changed)
                    changed.clear()
                # Taken after the ids: it holds every change they name (order-proof).
                snap = cache.snapshot()
                index.apply(snap, ids)
                live.update(frame(), refresh=True)
    finally:
        unsubscribe()
