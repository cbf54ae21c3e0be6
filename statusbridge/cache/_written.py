"""What a cache keeps of its own process's writes until its feed names them."""

from __future__ import annotations

from typing import TypeVar

from statusbridge.record import BatchJob

__all__ = ["remember_written"]

V = TypeVar("V")


def remember_written(
    written: dict[str, tuple[V, BatchJob]],
    absorbed: list[tuple[BatchJob, object]],
    version: type[V],
    limit: int,
) -> None:
    """Add what ``absorb`` handed over to ``written`` (job id -> (version, record)), for a
    backend whose feed names each write later (SQLite: the stored text; Redis: the feed
    entry's number). Bounded: past ``limit`` it is cleared, and those jobs are read as
    anyone else's."""
    if len(written) + len(absorbed) > limit:
        written.clear()
    for job, given in absorbed:
        if isinstance(given, version):
            written[job.id] = (given, job)
