"""Streamlit adapter: one cache and manager per server process, live views that never touch disk.

The only module that imports streamlit. Drop the helpers into your own app:

    import streamlit as st
    from statusbridge import streamlit as sbst

    @sbst.live_fragment("batch_status")  # reruns on a change; reads the snapshot only
    def live() -> None:
        manager = sbst.get_manager("batches", "batch_status")  # cached: one per server
        for summary in manager.list_batches()[:1]:
            sbst.batch_summary(summary)
            sbst.job_table(manager.get_batch_jobs(summary.id))

    if __name__ == "__main__":           # the page, in every session
        live()
    else:                                # `streamlit run` imports the file for `app`
        app = st.App(__file__, routes=sbst.push_routes("batch_status"), lifespan=sbst.lifespan)

``lifespan`` stops the managers' jobs and worker processes when the server stops (SIGTERM,
Ctrl-C); without ``st.App``, the same happens at interpreter exit. Without ``push_routes``
mounted, ``live_fragment`` is a timer fragment.
Workers never call ``st.*``: they write records, the cache reads them, and the
fragment renders the snapshot on the script thread. All text from status
files is shown through Streamlit's escaping widgets (no ``unsafe_allow_html``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import logging
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import streamlit as st

from statusbridge._streamlit_push import COMPONENT_JS, EVENTS_PATH, end_streams, events_path_for
from statusbridge._streamlit_push import push_routes as push_routes_for
from statusbridge._streamlit_table import STATE_ICONS, job_rows, job_table
from statusbridge._streamlit_workers import check_job_function, keep_workers_out_of_the_script
from statusbridge.cache import BatchSummary, CacheHealth, StatusCache
from statusbridge.display import (
    floor_share,
    percent,
    printable,
    state_label,
)
from statusbridge.jobs import BatchManager
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store._location import absolute_location

__all__ = [
    "batch_summary",
    "cancel_buttons",
    "check_job_function",
    "escape_markdown",
    "finished_over_time",
    "follow_batch",
    "get_cache",
    "get_manager",
    "health_panel",
    "hide_running_indicator",
    "job_details",
    "job_rows",
    "job_table",
    "keep_workers_out_of_the_script",
    "lifespan",
    "live_fragment",
    "push_available",
    "push_routes",
    "stop_managers",
    "summary_text",
]


@st.cache_resource(show_spinner=False)
def _cache_for(folder: str) -> StatusCache:
    return StatusCache(folder)


def get_cache(status_dir: str | Path = "batch_status") -> StatusCache:
    """The server-wide ``StatusCache`` of ``status_dir``: all sessions share one observer."""
    return _cache_for(absolute_location(status_dir))


class _ProcessManager(BatchManager):
    """A manager on worker processes that refuses job functions defined in the script."""

    def start_batch(self, batch_id: str, generator_func: Callable[[Any], Any]) -> None:
        check_job_function(generator_func)
        keep_workers_out_of_the_script()
        super().start_batch(batch_id, generator_func)


@st.cache_resource(show_spinner=False)
def _manager_for(
    batch_dir: str, status_dir: str, max_concurrent: int, executor: str
) -> BatchManager:
    kind = _ProcessManager if executor == "process" else BatchManager
    manager = kind(
        batch_dir,
        max_concurrent,
        status_dir,
        executor=executor,  # type: ignore[arg-type]
        cache=_cache_for(status_dir),
    )
    with _managers_lock:
        _managers.append(manager)
    return manager


_managers: list[BatchManager] = []
_managers_lock = threading.Lock()
_pushed: list[str] = []  # folders push_routes serves: lifespan reads them in at start
_WARM_UP_WAIT = 10.0  # seconds a server's start waits for those caches at most
_pushed_lock = threading.Lock()
logger = logging.getLogger(__name__)


def stop_managers(timeout: float = 5.0) -> None:
    """Stop every manager ``get_manager`` made, for a server that is going away.

    Pending jobs end CANCELLED, running ones are asked to stop, and worker processes still
    busy after ``timeout`` are killed (their jobs end FAILED, as when a worker dies), so
    no worker process outlives the server. Safe to call twice.
    """
    with _managers_lock:
        managers = list(_managers)
        _managers.clear()
    for manager in managers:
        try:
            manager.queue.stop_now(timeout)
        except Exception:
            logger.exception("statusbridge: could not stop %r", manager)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """``st.App(..., lifespan=lifespan)``: end the push streams and stop the managers when the
    server stops.

    Needed with ``st.App``: its server waits for open responses (each push stream would run
    out its timer) before this shutdown step, then ends the process by re-raising SIGTERM,
    so interpreter-exit handlers never run there. The streams are ended from the stop
    signal itself: the handler the server installed is wrapped, and still called.

    At start, pandas (the job table's) is imported and the caches of the pushed folders
    are read before the server serves: done in the background, they competed with the
    first page's own work (its scripts served, its first run), which then waited for them
    anyway. The start waits for a slow store only so long; it is then read on in the
    background.
    """
    _end_streams_on_stop_signals()
    try:
        importlib.import_module("pandas")  # its first import takes a while
    except ImportError:  # pragma: no cover - Streamlit requires it
        logger.exception("statusbridge: could not import pandas")
    warming = threading.Thread(target=_warm_up, name="statusbridge-warm-up", daemon=True)
    warming.start()
    await asyncio.to_thread(warming.join, _WARM_UP_WAIT)
    yield
    end_streams()
    stop_managers()


def _warm_up() -> None:
    """Read the pushed folders into their caches before a page asks."""
    with _pushed_lock:
        folders = list(dict.fromkeys(_pushed))
    try:
        for folder in folders:
            _cache_for(folder)
    except Exception:
        logger.exception("statusbridge: could not prepare the caches of %s", folders)


def _end_streams_on_stop_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread; streams then end on their timer
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if getattr(previous, "_statusbridge_ends_streams", False):
            continue

        def on_stop(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            end_streams()
            if callable(previous):
                previous(number, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(number, signal.SIG_DFL)
                signal.raise_signal(number)

        on_stop._statusbridge_ends_streams = True  # type: ignore[attr-defined]
        signal.signal(signum, on_stop)


atexit.register(stop_managers)  # `streamlit run` without st.App exits the interpreter normally


def get_manager(
    batch_dir: str | Path = "batches",
    status_dir: str | Path = "batch_status",
    *,
    max_concurrent: int = 2,
    executor: Literal["thread", "process"] = "thread",
) -> BatchManager:
    """The server-wide ``BatchManager`` for these folders (shares the folder's cache).

    Call it on every run (it is cached): the same manager comes back, so jobs and
    batches survive reruns, and a new ``BatchManager(...)`` built in the script
    would share that engine too. With ``executor="process"``, job functions must
    come from an importable module; one defined in the script raises ``TypeError``
    from ``start_batch`` that says where to move it.
    """
    if executor == "process":
        keep_workers_out_of_the_script()
    return _manager_for(
        absolute_location(batch_dir),
        absolute_location(status_dir),
        max_concurrent,
        executor,
    )


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$])")


# A URL or www. address, which Markdown turns into a link even with its specials escaped.
_AUTOLINK = re.compile(r"(?i)(https?|ftp|mailto|www)(?=[:.])")


def escape_markdown(text: str) -> str:
    r"""``text`` for a place that renders Markdown (a caption, a progress label), shown as typed.

    No markup, no image fetched, no link made (a zero-width space after ``http`` or
    ``www`` stops autolinking), and control characters and bidi overrides shown as
    escapes (``\u202e``) so they cannot reverse what follows.

    Examples:
        >>> escape_markdown("![t](http://x/i.png) *b*")
        '\\!\\[t\\]\\(http\u200b\\://x/i\\.png\\) \\*b\\*'
    """
    text = printable(" ".join(text.split()))
    text = _AUTOLINK.sub("\\1\u200b", text)
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


_plain = escape_markdown  # the label helper's old name, used below


# Markdown colour names nearest to display.STATUS_COLOURS (labels take names, not hex).
_STATE_MARKDOWN_COLOURS = {
    "empty": "gray",
    "pending": "gray",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "orange",
}


def summary_text(summary: BatchSummary) -> str:
    """The label above a batch's bar: ``6 jobs: running, 42%`` or, once finished with trouble,
    ``6 jobs: failed, 3 of 6 completed (2 failed, 1 cancelled)``.

    Examples:
        >>> from statusbridge.cache._snapshot import summarize
        >>> from statusbridge import BatchJob
        >>> print(summary_text(summarize([BatchJob("a", "running", progress=0.996)], name="b")))
        b: running, 99%
    """
    label = summary.name or summary.id or "All jobs"
    counts = summary.counts
    if summary.is_done and summary.state in ("failed", "cancelled"):
        trouble = ", ".join(
            f"{counts[s]} {s.value}"
            for s in (BatchStatus.FAILED, BatchStatus.CANCELLED)
            if counts[s]
        )
        done = counts[BatchStatus.COMPLETED]
        return f"{label}: {summary.state}, {done} of {summary.total} completed ({trouble})"
    return f"{label}: {summary.state}, {percent(summary.completed_share)}"


def _bar_value(summary: BatchSummary) -> float:
    """A batch's bar: the completed share, rounded down (full only when all completed)."""
    return floor_share(summary.completed_share, 100) / 100


def batch_summary(summary: BatchSummary, *, counts: bool = True) -> None:
    """Overall progress bar (coloured label by state) and a count per status."""
    colour = _STATE_MARKDOWN_COLOURS.get(summary.state, "gray")
    label = _plain(summary_text(summary))
    st.progress(_bar_value(summary), text=f":{colour}[{label}]")
    if not counts:
        return
    columns = st.columns(len(BatchStatus))
    for column, status in zip(columns, BatchStatus, strict=True):
        column.metric(f"{STATE_ICONS[status]} {status.value}", summary.counts[status])


def hide_running_indicator() -> None:
    """Hide Streamlit's header "Running…/Stop" indicator, which blinks on every live redraw.

    A live page reruns fragments whenever a status changes; the page itself shows
    what is running. Static CSS only.
    """
    st.html("<style>[data-testid='stStatusWidget'] { visibility: hidden; }</style>")


def job_details(jobs: Iterable[BatchJob]) -> None:
    """Each job's whole message or error, readable (escaped, wrapped, never cut)."""
    for job in jobs:
        text = job.error_message or job.message or "(no message)"
        with st.container(border=True):
            st.caption(f"{job.id} · {state_label(job)}")  # the full id, here
            st.code(text, language=None, wrap_lines=True)


def cancel_buttons(manager: BatchManager, jobs: Sequence[BatchJob], *, key: str = "cancel") -> int:
    """A cancel button per unfinished job; returns how many were cancelled on this run."""
    cancelled = 0
    for job in jobs:
        if job.is_finished:
            continue
        if st.button(f"Cancel {job.id}", key=f"{key}-{job.id}"):
            cancelled += int(manager.queue.cancel(job.id))
    return cancelled


def health_panel(health: CacheHealth) -> None:
    """Backend, events applied, rescans and invalid files of the cache."""
    cols = st.columns(4)
    cols[0].metric("backend", health.backend)
    cols[1].metric("events", health.events)
    cols[2].metric("rescans", health.rescans)
    cols[3].metric("snapshot version", health.version)
    if health.invalid_files:
        st.warning(f"{len(health.invalid_files)} file(s) skipped")
        st.dataframe(
            [{"file": name, "reason": reason} for name, reason in health.invalid_files.items()],
            hide_index=True,
        )
    if health.last_error:
        st.error("The cache reports an error:", icon="⚠️")
        st.code(printable(health.last_error), language=None, wrap_lines=True)  # never markup


def finished_over_time(
    jobs: Iterable[BatchJob], *, bucket_seconds: int = 5
) -> dict[str, list[Any]]:
    """Jobs finished per time bucket, cumulative, for ``st.line_chart`` (x: time, y: count)."""
    times = sorted(j.completed_at for j in jobs if j.is_finished and j.completed_at)
    if not times:
        return {"time": [], "finished": []}
    buckets: dict[datetime, int] = {}
    for t in times:
        stamp = datetime.fromtimestamp(t.timestamp() // bucket_seconds * bucket_seconds, UTC)
        buckets[stamp] = buckets.get(stamp, 0) + 1
    total = 0
    xs, ys = [], []
    for stamp in sorted(buckets):
        total += buckets[stamp]
        xs.append(stamp)
        ys.append(total)
    return {"time": xs, "finished": ys}


# -- push: rerun a live fragment when the folder changes, not on a timer ------------------------

_push_component: Any = None


def _pusher() -> Any:
    """The push component, registered once per process (None where Streamlit lacks v2)."""
    global _push_component  # noqa: PLW0603 - one registration per process, by design
    if _push_component is None:
        components_v2 = getattr(getattr(st, "components", None), "v2", None)
        if components_v2 is None:
            return None
        _push_component = components_v2.component("statusbridge_push", js=COMPONENT_JS)
    return _push_component


def push_routes(status_dir: str | Path = "batch_status", *, path: str = EVENTS_PATH) -> Any:
    """Routes for ``st.App(script, routes=...)`` that push ``status_dir``'s changes.

    With them, ``live_fragment`` reruns on changes instead of on a timer. The route
    streams version numbers only; it serves only the Host names of ``server.allowedHosts``
    (as Streamlit's own page does; set it: the repository's ``.streamlit/config.toml``
    does), and only to a page this server drew (a per-server token reaches the page
    through its component's arguments). The page itself has no authentication: see
    the docs.
    """
    folder = absolute_location(status_dir)
    with _pushed_lock:
        _pushed.append(folder)
    return push_routes_for(
        lambda: _cache_for(folder),
        folder,
        path=path,
        allowed_hosts=lambda: st.get_option("server.allowedHosts") or (),
    )


def push_available(status_dir: str | Path = "batch_status") -> bool:
    """True when this server streams ``status_dir``'s changes (``push_routes`` is mounted)."""
    return _pusher() is not None and events_path_for(absolute_location(status_dir)) is not None


# The batch the live fragment being run follows (follow_batch), per script thread.
_followed = threading.local()


def follow_batch(batch_id: str | None) -> None:
    """Inside a ``live_fragment``: rerun it only when ``batch_id`` changes, not on every
    change in the folder.

    For a fragment that shows one batch (its job table, its summary): writes to the
    other batches leave it alone, which matters when they are big or busy. It still
    reruns when a batch appears or goes, so a batch picker drawn in it stays current.
    Call it on each run (a run follows what it asked for; ``None``, or no call: the
    whole folder). A timer fragment (no push) reruns on its timer as before.
    """
    _followed.batch = batch_id


def live_fragment(
    status_dir: str | Path = "batch_status", *, every: float = 0.5, gap_ms: int = 100
) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Like ``st.fragment``, rerun when ``status_dir`` changes (at most every ``gap_ms``).

    Pushed where the server mounts ``push_routes``; elsewhere (AppTest, plain
    ``streamlit run`` of a script without ``st.App``, older Streamlit) a timer
    fragment that reruns every ``every`` seconds.
    """
    folder = absolute_location(status_dir)

    def decorate(body: Callable[[], None]) -> Callable[[], None]:
        # One per fragment; Streamlit reserves "__" in component ids.
        key = "statusbridge-push-" + re.sub(r"[^A-Za-z0-9]+", "-", body.__qualname__)

        def pushed() -> None:
            if events_path_for(folder) is None or _pusher() is None:  # pragma: no cover
                body()  # (decided below)
                return
            snap = _cache_for(folder).snapshot()  # before drawing: a change meanwhile reruns
            _followed.batch = None
            body()
            _pusher()(
                data={
                    "url": events_path_for(folder, getattr(_followed, "batch", None)),
                    "version": snap.version,
                    "gap_ms": gap_ms,
                },
                key=key,
                on_change_change=lambda: None,
            )

        pushed.__name__ = pushed.__qualname__ = body.__qualname__
        timed = st.fragment(run_every=every)(body)
        on_push = st.fragment(pushed)

        def run() -> None:
            (on_push if push_available(folder) else timed)()

        return run

    return decorate
