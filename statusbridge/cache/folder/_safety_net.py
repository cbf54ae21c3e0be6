"""When the cache's periodic reconcile must list and stat every file, and when it need not.

A full reconcile costs a stat per record, which is too much to spend every
interval of a large folder while native events
(inotify and the like) are trustworthy: overflow, a dead observer and a
replaced folder are each noticed by cheaper means already. With a healthy
native watch, a tick costs one stat of the folder: the folder changed while no
event arrived means events went missing, and only then is a full reconcile
run; one runs anyway every ``full_every`` ticks, as the last resort. A polling
or failed watch keeps the full reconcile at every tick.
"""

from __future__ import annotations

import os

__all__ = ["FULL_EVERY", "SafetyNet", "folder_stamp"]

# With trusted events, one tick in this many is a full reconcile anyway.
FULL_EVERY = 20

Stamp = tuple[int, int, int] | None


def folder_stamp(folder: str) -> Stamp:
    """What changes when an entry of ``folder`` is added, removed or renamed."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


class SafetyNet:
    """Used by the cache thread only (no lock)."""

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self.full_every = full_every
        self._ticks = 0
        self._events = -1
        self._stamp: Stamp = None

    def full_done(self, events: int, stamp: Stamp) -> None:
        """A full reconcile started with ``events`` counted and the folder at ``stamp``."""
        self._ticks = 0
        self._events = events
        self._stamp = stamp

    def needs_full(self, *, trusted: bool, events: int, stamp: Stamp) -> bool:
        """At a reconcile tick: is a full reconcile due?"""
        self._ticks += 1
        silent_change = stamp != self._stamp and events == self._events
        self._events, self._stamp = events, stamp
        return not trusted or silent_change or self._ticks >= self.full_every
