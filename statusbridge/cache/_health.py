"""``CacheHealth``: what a cache knows about itself, and the clock-skew note in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = ["MAX_SKEWED", "CacheHealth", "skew_note"]


@dataclass(frozen=True)
class CacheHealth:
    """What the cache knows about itself; cheap to take, safe to show in a UI."""

    running: bool
    backend: str
    version: int
    jobs: int
    events: int
    rescans: int
    last_event_at: datetime | None
    invalid_files: Mapping[str, str]
    directory: str
    directory_present: bool
    observer_restarts: int
    last_error: str | None
    backend_note: str | None = None  # why the backend is not the platform's native one
    watched_directory: str | None = None  # the real folder, when ``directory`` is a symlink
    # Records that went from the server without a delete (Redis eviction): how many this
    # cache noticed, and the ids of the last ones (oldest first).
    vanished_records: int = 0
    vanished_ids: tuple[str, ...] = ()
    # "clock skew: ..." while a writer's timestamps run more than a minute ahead of or
    # behind this process's clock (CLOCK_SKEW_LIMIT); None when they agree.
    clock_skew: str | None = None


MAX_SKEWED = 100  # writers whose clock skew a cache remembers


def skew_note(skews: Mapping[str, float]) -> str | None:
    """``health().clock_skew``: the writer furthest apart, and how many others are."""
    if not skews:
        return None
    writer, skew = max(skews.items(), key=lambda item: abs(item[1]))
    side = "ahead of" if skew > 0 else "behind"
    others = f" (and {len(skews) - 1} other writer(s))" if len(skews) > 1 else ""
    return (
        f"clock skew: {writer} writes timestamps {abs(skew):.0f} s {side} this process's"
        f" clock{others}; liveness and retention count on this process's clock"
    )
