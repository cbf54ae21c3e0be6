"""Plain-text rendering for terminals: a job table that fits 80 columns, progress bars, ages.

Text from status files (messages, errors, owners, file names) is shown through
``printable``: control characters and bidi overrides never reach the terminal.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from datetime import datetime

from statusbridge.cache import BatchSummary
from statusbridge.display import floor_share, job_share, percent, printable, short_id
from statusbridge.record import BatchJob

__all__ = ["age", "bar", "invalid_lines", "job_table", "json_text", "printable", "summary_line"]

# In json's output C0 controls are escaped already; its only raw ones are the indent's newlines.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def json_text(value: object) -> str:
    """Indented JSON that decodes to exactly ``value``, safe to print on a terminal.

    json escapes C0 controls itself; DEL, C1 controls and bidi overrides become
    ``\\uXXXX`` escapes too (they can only occur inside strings, so that is exact).
    """
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def age(when: datetime | None, now: datetime) -> str:
    """Compact age: 5s, 3m, 2h, 4d.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2030, 1, 1, tzinfo=UTC)
    >>> age(t, t + timedelta(seconds=95)), age(None, t)
    ('1m', '-')
    """
    if when is None:
        return "-"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def bar(progress: float | None, width: int = 10) -> str:
    """``[####------]  40%`` (ASCII: any terminal, any font).

    Rounded down, so a bar looks full, and says 100%, only when the work is done.

    >>> bar(0.4), bar(0.95), bar(0.999), bar(1.0)
    ('[####------]  40%', '[#########-]  95%', '[#########-]  99%', '[##########] 100%')
    """
    if progress is None:
        return "[" + " " * width + "]    -"
    filled = floor_share(progress, width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {percent(progress):>4}"


def _clip(text: str, width: int) -> str:
    text = printable(" ".join(text.split()))  # no newlines, tabs or controls in a table
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def job_table(
    jobs: Iterable[BatchJob],
    now: datetime,
    *,
    width: int | None = None,
    fit: bool = True,
    batch: str | None = None,
) -> str:
    """A table of jobs, oldest first, fitted to ``width`` columns (default: the terminal's).

    Ids are shortened by ``display.short_id``: the distinguishing tail is kept.
    ``batch``: the batch the rows were filtered to; it is not repeated in a
    column, and ids lose its prefix. The message column gets the room left.
    ``fit=False`` (output to a pipe or a file) never cuts a value: ids that differ
    only at the end must stay distinguishable for ``grep`` and ``awk``.
    """
    if not fit:
        return _full_table(list(jobs), now)
    width = width or shutil.get_terminal_size((80, 24)).columns
    rows = sorted(jobs, key=lambda j: (j.created_at or now, j.id))
    # The batch column only when it tells something: BatchManager's job ids start with
    # their batch id already, and one batch for all rows says nothing per row.
    show_batch = (
        batch is None
        and len({j.batch_id for j in rows}) > 1
        and any(j.batch_id and not j.id.startswith(j.batch_id) for j in rows)
    )
    batch_w = min(max([5, *(len(j.batch_id or "-") for j in rows)]), 16) if show_batch else 0
    fixed = (batch_w + 1 if show_batch else 0) + 9 + 1 + 17 + 1 + 4 + 1
    ids = [short_id(j.id, batch_id=batch) for j in rows]
    # Ids take at most half of what the fixed columns leave; the message the rest.
    id_w = min(max([2, *(len(i) for i in ids)]), max(12, (width - fixed) // 2))
    msg_w = max(10, width - fixed - id_w - 1)
    batch_head = f"{'BATCH':<{batch_w}} " if show_batch else ""
    lines = [f"{'ID':<{id_w}} {batch_head}{'STATE':<9} {'PROGRESS':<17} {'AGE':>4} MESSAGE"]
    for j, shown_id in zip(rows, ids, strict=True):
        text = j.error_message if j.error_message else j.message
        batch_cell = short_id(j.batch_id or "-", batch_w)
        batch_text = f"{printable(batch_cell):<{batch_w}} " if show_batch else ""
        shown = bar(job_share(j))
        lines.append(
            f"{printable(short_id(shown_id, id_w)):<{id_w}} {batch_text}{j.status.value:<9} "
            f"{shown:<17} {age(j.updated_at, now):>4} {_clip(text or '', msg_w)}"
        )
    return "\n".join(lines)


def _full_table(jobs: list[BatchJob], now: datetime) -> str:
    rows = sorted(jobs, key=lambda j: (j.created_at or now, j.id))
    cells = [
        (
            printable(j.id),
            printable(j.batch_id or "-"),
            j.status.value,
            bar(job_share(j)),
            age(j.updated_at, now),
            printable(" ".join((j.error_message or j.message or "").split())),
        )
        for j in rows
    ]
    head = ("ID", "BATCH", "STATE", "PROGRESS", "AGE", "MESSAGE")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(5)]
    return "\n".join(
        " ".join(
            [*(c[i].rjust(widths[i]) if i == 4 else c[i].ljust(widths[i]) for i in range(5)), c[5]]
        ).rstrip()
        for c in [head, *cells]
    )


def invalid_lines(invalid: Mapping[str, str], *, most: int = 3, width: int = 80) -> list[str]:
    """One line per record file that could not be read, at most ``most`` (then a count).

    >>> invalid_lines({"a.json": "not valid JSON", "b.json": "cannot read: Permission denied"})
    ['! a.json: not valid JSON', '! b.json: cannot read: Permission denied']
    """
    names = sorted(invalid)
    lines = [_clip(f"! {name}: {invalid[name]}", width) for name in names[:most]]
    if len(names) > most:
        lines.append(f"! and {len(names) - most} more unreadable record file(s)")
    return lines


def summary_line(summary: BatchSummary) -> str:
    """Counts, then the overall bar on its own line (both fit 80 columns).

    >>> from statusbridge.cache._snapshot import summarize
    >>> from statusbridge.record import BatchJob
    >>> print(summary_line(summarize([BatchJob("a", "completed"), BatchJob("b")])))
    2 jobs: 1 pending, 1 completed
    overall [##########----------]  50%

    The bar shows the completed share: it is full only when every job completed.
    """
    counts = ", ".join(f"{n} {s.value}" for s, n in summary.counts.items() if n) or "no jobs"
    return f"{summary.total} jobs: {counts}\noverall {bar(summary.completed_share, 20)}"
