"""Plain values a job UI shows, for any toolkit: elapsed time, ETA, state colours, short durations.

Bars and percentages, in every view (``ls``, ``watch``, the Qt window, the tk
example, the Streamlit demo), show the share of the work that *completed*
(``job_share``, ``BatchSummary.completed_share``): a bar is full, and says
"100%", only when its job, or every job of its batch, completed. A failed or
cancelled job keeps the bar where it stopped, short of full, also when it had
reached its last step. Words say how many jobs are *done* (finished, whatever
the outcome: ``done_text``): "6 of 6 done" beside "0%" for a batch that was
cancelled.

No UI toolkit is imported here: ``statusbridge.qt`` and ``examples/tk_monitor.py``
share these, and they are tested without a display. Times are computed against
an injected ``now`` (aware UTC), so they are pure functions of their arguments.

Examples:
    >>> from datetime import UTC, datetime, timedelta
    >>> from statusbridge import BatchJob, BatchStatus
    >>> now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    >>> job = BatchJob(id="a", status=BatchStatus.RUNNING, progress=0.25,
    ...                started_at=now - timedelta(seconds=30))
    >>> elapsed_seconds(job, now), eta_seconds(job, now), format_duration(eta_seconds(job, now))
    (30.0, 90.0, '1m 30s')
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._eta import elapsed_seconds
from statusbridge.record._share import floor_share

__all__ = [
    "BACKEND_TEXTS",
    "STATUS_COLOURS",
    "BackendText",
    "backend_text",
    "batch_eta_seconds",
    "done_text",
    "elapsed_seconds",
    "eta_seconds",
    "floor_share",
    "format_duration",
    "job_share",
    "percent",
    "printable",
    "short_id",
    "state_label",
]

# Readable as text on a light background and as a progress-bar fill (WCAG AA on white).
STATUS_COLOURS: Mapping[BatchStatus, str] = MappingProxyType(
    {
        BatchStatus.PENDING: "#6b7280",  # grey
        BatchStatus.RUNNING: "#1d4ed8",  # blue
        BatchStatus.COMPLETED: "#15803d",  # green
        BatchStatus.FAILED: "#b91c1c",  # red
        BatchStatus.CANCELLED: "#a16207",  # amber
    }
)


def eta_seconds(job: BatchJob, now: datetime) -> float | None:
    """Estimated seconds left for a running job at ``now``: ``BatchJob.eta``.

    None unless the job is RUNNING with a start time and a progress above 0 (no
    basis for an estimate); 0 once its progress reaches 1.
    """
    return job.eta(now=now)


class _Estimable(Protocol):
    def eta(self, *, now: datetime | None = None) -> float | None: ...


def batch_eta_seconds(summary: _Estimable, now: datetime) -> float | None:
    """Estimated seconds until a batch (a ``BatchSummary``) has finished: ``BatchSummary.eta``.

    None for an empty batch or when no job reports progress and none has finished yet.
    """
    return summary.eta(now=now)


def format_duration(seconds: float | None) -> str:
    """Short text for a duration: '', '4s', '2m 05s', '3h 07m'.

    Examples:
        >>> [format_duration(s) for s in (None, 0.4, 59.6, 125, 11_220)]
        ['', '0s', '1m 00s', '2m 05s', '3h 07m']
    """
    if seconds is None:
        return ""
    total = round(max(0.0, seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def state_label(job: BatchJob) -> str:
    """The state as shown to a person: the status, or 'cancelling' once a running job was asked.

    Examples:
        >>> state_label(BatchJob(id="a", status=BatchStatus.RUNNING, cancel_requested=True))
        'cancelling'
    """
    if job.status is BatchStatus.RUNNING and job.cancel_requested:
        return "cancelling"
    return job.status.value


# C0 and C1 controls and DEL (ESC starts terminal escape sequences; BEL, backspace,
# carriage return rewrite what is shown), and the invisible marks and overrides that
# reorder text (U+061C, U+200E/F, U+202A-202E, U+2066-2069), and U+2028/2029.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    r"""``text`` with every control character and bidi override shown as an escape.

    What every view does to text from a record (a message, an error, a name) before it
    shows it: a record cannot move the cursor, ring, or reverse what follows it.

    Examples:
        >>> print(printable("red\x1b[31m bell\x07 \u202eevil"))
        red\x1b[31m bell\x07 \u202eevil
    """
    return _UNSAFE.sub(_escape, text)


def percent(progress: float) -> str:
    """'0%'..'100%', rounded down: '100%' only when the work is complete.

    Examples:
        >>> [percent(p) for p in (0.0, 0.426, 0.996, 1.0)]
        ['0%', '42%', '99%', '100%']
    """
    return f"{floor_share(progress, 100)}%"


def job_share(job: BatchJob) -> float | None:
    """What a job's bar shows: 1.0 once it completed, else its reported progress, never full.

    None while a job that has not completed has reported no progress ("unknown").
    A job cancelled or failed after its last step stays just short of full
    (it did not complete), so its bar and "99%" never read as done.

    Examples:
        >>> [job_share(BatchJob(id="a", status=s, progress=1.0))
        ...  for s in (BatchStatus.COMPLETED, BatchStatus.CANCELLED)]
        [1.0, 0.9999999999999999]
        >>> percent(job_share(BatchJob(id="a", status=BatchStatus.CANCELLED, progress=1.0)))
        '99%'
    """
    if job.status is BatchStatus.COMPLETED:
        return 1.0
    reported = job.reported_progress
    if reported is None:
        return None
    return min(max(0.0, reported), math.nextafter(1.0, 0.0))


class _Counted(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def finished(self) -> int: ...


def done_text(summary: _Counted) -> str:
    """How many jobs of a batch (a ``BatchSummary``) are done, whatever their outcome.

    >>> from statusbridge.cache._snapshot import summarize
    >>> print(done_text(summarize([BatchJob("a", BatchStatus.FAILED), BatchJob("b")])))
    1 of 2 done
    """
    return f"{summary.finished} of {summary.total} done"


def short_id(job_id: str, width: int | None = None, *, batch_id: str | None = None) -> str:
    """A job id as every view shows it: the distinguishing tail kept, the cut marked with '…'.

    Ids of one batch differ at the end (``batch-20261207-045840-<random>-0001``,
    ``job-<process>-17``), so a view that must cut keeps the end. ``batch_id``:
    the batch the view is filtered to (one batch, named elsewhere on the
    screen); an id that starts with it loses that prefix (``…-0001``), so
    its own part is all that is left. ``width`` (characters, marker included):
    longer ids keep their last ``width - 1`` characters. The full id belongs in
    a tooltip, ``show`` or ``--json``.

    >>> job = "batch-20261207-045840-39430f63e5ab1234-0001"
    >>> short_id(job, batch_id="batch-20261207-045840-39430f63e5ab1234")
    '…-0001'
    >>> short_id(job, 16), short_id("job-980fe6e520da-3", 12), short_id("a-1", 12)
    ('…63e5ab1234-0001', '…fe6e520da-3', 'a-1')
    """
    shown = job_id
    cut = len(batch_id or "")
    if batch_id and len(job_id) > cut + 1 and job_id.startswith(batch_id) and job_id[cut] in "-_.":
        shown = "…" + job_id[cut:]
    if width is not None and len(shown) > width:
        keep = max(1, width - 1)
        shown = "…" + shown[len(shown) - keep :]
    return shown


@dataclass(frozen=True)
class BackendText:
    """How a storage backend is described to a person: what a record is, how changes arrive."""

    records: str  # "one JSON file per job"
    feed: str  # "a watchdog observer"
    unreadable: str  # doctor's finding: "invalid or foreign file(s)"

    @property
    def how_it_works(self) -> str:
        """'Workers write one JSON file per job; a watchdog observer keeps an in-memory
        snapshot current' (the demo's caption, without a full stop)."""
        return f"Workers write {self.records}; {self.feed} keeps an in-memory snapshot current"


#: Texts by location scheme ("file" for a folder). A backend registers its own here.
BACKEND_TEXTS: dict[str, BackendText] = {
    "file": BackendText(
        "one JSON file per job", "a watchdog observer", "invalid or foreign file(s)"
    ),
    "redis": BackendText(
        "one record per job to Redis", "Redis's change stream", "invalid record(s)"
    ),
    "sqlite": BackendText(
        "one row per job to a SQLite database",
        "its change log, read on file-system events,",
        "invalid record(s)",
    ),
}
BACKEND_TEXTS["rediss"] = BACKEND_TEXTS["redis"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")


def backend_text(location: str | os.PathLike[str]) -> BackendText:
    """The description of the backend behind ``location`` (a folder, or a URL by its scheme).

    >>> backend_text("batch_status").unreadable, backend_text("redis://h/0").unreadable
    ('invalid or foreign file(s)', 'invalid record(s)')
    >>> backend_text("rediss://h/0?prefix=x").how_it_works.split(";")[0]
    'Workers write one record per job to Redis'
    """
    match = _SCHEME.match(os.fspath(location))
    scheme = match.group(1).lower() if match else "file"
    return BACKEND_TEXTS.get(
        scheme, BackendText("one record per job", "the backend's change feed", "invalid record(s)")
    )
