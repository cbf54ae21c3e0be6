"""The event stream: a cache's changes as server-sent events, resumable, one queue per client.

One ``EventHub`` per app subscribes to the ``StatusCache`` once. Its callback, on the
cache thread, only appends to an inbox and wakes the event loop (one
``call_soon_threadsafe`` per burst, whatever the number of clients), so clients never
slow the cache thread. On the loop, the hub keeps the last ``history`` changes (for
``Last-Event-ID``) and hands each one to every client's bounded queue; a client whose
queue is full is given a ``reset`` (the full state) instead of the changes it missed,
so a slow reader costs memory for ``QUEUE_SIZE`` entries at most and never holds up
the others.

An event's ``id`` is ``<run>:<snapshot version>``: the run (random, per hub) keeps an
id from another server process, whose versions count from its own start, from being
taken for one of this one's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.record._codec import job_to_dict

__all__ = ["KEEP_ALIVE_SECONDS", "EventHub"]

logger = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 15.0

# A version-only event of the whole folder lists the batches its changes touched, up to
# this many (more: none listed): a page's fragment that follows one of them goes first.
BATCHES_LISTED = 64
"""A comment line this often on a quiet stream keeps proxies from closing it."""

RETRY_MS = 1000  # how soon a browser reconnects after a stream ended
QUEUE_SIZE = 256  # changes a client may fall behind by before it is sent a reset instead
HISTORY = 1024  # changes kept for clients that come back with a Last-Event-ID


@dataclass(frozen=True, eq=False)
class Change:
    """One published snapshot and the one before it; its event text is made once per filter."""

    snapshot: Snapshot
    previous: Snapshot
    ids: frozenset[str]
    encoded: dict[str | None, str | None] = field(default_factory=dict)
    touched: dict[str, bool] = field(default_factory=dict)
    _batches: list[frozenset[str]] = field(default_factory=list)  # batches(), made once

    def batches(self) -> frozenset[str]:
        """The batches a job of which changed here (or joined or left one)."""
        if not self._batches:
            found = set()
            for job_id in self.ids:
                for job in (self.snapshot.get(job_id), self.previous.get(job_id)):
                    if job is not None and job.batch_id is not None:
                        found.add(job.batch_id)
            self._batches.append(frozenset(found))
        return self._batches[0]

    @property
    def version(self) -> int:
        return self.snapshot.version


def _json(value: object) -> str:
    # No indent: an event's data is one line. ASCII escapes keep lone surrogates encodable.
    return json.dumps(value, separators=(",", ":"))


def _in_batch(snapshot: Snapshot, job_id: str, batch: str | None) -> bool:
    job = snapshot.get(job_id)
    return job is not None and (batch is None or job.batch_id == batch)


def change_data(changes: list[Change], batch: str | None) -> str | None:
    """The ``data`` of one ``change`` event covering ``changes`` (oldest first), seen
    through ``batch`` (None: every job); None when nothing in them concerns that batch.

    A job that left the batch's view (deleted, or moved to another batch) is listed
    under ``deleted``.
    """
    if len(changes) == 1 and batch in changes[0].encoded:
        return changes[0].encoded[batch]
    newest, oldest = changes[-1].snapshot, changes[0].previous
    ids: Iterable[str] = (
        changes[0].ids if len(changes) == 1 else set().union(*(c.ids for c in changes))
    )
    jobs, deleted = [], []
    for job_id in sorted(ids):
        if _in_batch(newest, job_id, batch):
            jobs.append(job_to_dict(newest[job_id]))
        elif _in_batch(oldest, job_id, batch) or (batch is None and job_id not in newest):
            deleted.append(job_id)
    data = (
        _json({"version": newest.version, "jobs": jobs, "deleted": deleted})
        if jobs or deleted
        else None
    )
    if len(changes) == 1:
        changes[0].encoded[batch] = data
    return data


def touches(change: Change, batch: str) -> bool:
    """Whether ``change`` concerns ``batch``: a job of it changed (or joined or left it), or
    a batch appeared or went, so that a batch picker drawn with that batch stays current."""
    known = change.touched.get(batch)
    if known is None:
        known = False
        for job_id in change.ids:
            new, old = change.snapshot.get(job_id), change.previous.get(job_id)
            now_in = None if new is None else new.batch_id
            was_in = None if old is None else old.batch_id
            if batch in (now_in, was_in):
                known = True
            elif now_in != was_in:
                appeared = now_in is not None and now_in not in change.previous.batch_ids()
                went = was_in is not None and was_in not in change.snapshot.batch_ids()
                known = appeared or went
            if known:
                break
        change.touched[batch] = known
    return known


def version_data(changes: list[Change], batch: str | None) -> str:
    """The ``data`` of a version-only ``change`` event: the newest version, and for the
    whole folder (``batch`` None) the batches the changes touched, if any and few."""
    version = changes[-1].version
    if batch is not None:
        return _json({"version": version})
    touched = frozenset().union(*(change.batches() for change in changes))
    if not touched or len(touched) > BATCHES_LISTED:
        return _json({"version": version})
    return _json({"version": version, "batches": sorted(touched)})


def reset_data(snapshot: Snapshot, batch: str | None) -> str:
    """The ``data`` of a ``reset`` event: every job (of ``batch``), by id."""
    jobs = snapshot.batch(batch) if batch is not None else snapshot.values()
    docs = [job_to_dict(job) for job in sorted(jobs, key=lambda job: job.id)]
    return _json({"version": snapshot.version, "jobs": docs})


class _Client:
    """One open stream: its bounded queue of changes, or the reset it is owed instead."""

    def __init__(self, queue_size: int) -> None:
        self.queue: deque[Change] = deque()
        self.queue_size = queue_size
        self.reset = False
        self.wake = asyncio.Event()

    def offer(self, change: Change | None) -> None:
        """Queue ``change`` (None: a gap, nothing to resume from); on the event loop."""
        if change is None or len(self.queue) >= self.queue_size:
            self.queue.clear()
            self.reset = True
        else:
            self.queue.append(change)
        self.wake.set()


class EventHub:
    """The app's one subscription to the cache, fanned out to every open stream."""

    def __init__(self, cache: StatusCache) -> None:
        self.cache = cache
        self.run = secrets.token_hex(4)
        self._history: deque[Change] = deque(maxlen=HISTORY)
        self._inbox: deque[tuple[Snapshot, frozenset[str]]] = deque()
        self._lock = threading.Lock()  # guards _loop and _scheduled, with the cache thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._last = cache.snapshot()
        self._clients: set[_Client] = set()
        self._ending = False

    # -- the cache thread ------------------------------------------------------------
    def _on_change(self, snapshot: Snapshot, changed: frozenset[str]) -> None:
        self._inbox.append((snapshot, changed))
        with self._lock:
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # that loop is closed: the next stream binds a new one
            with self._lock:
                self._scheduled = False

    # -- the event loop ----------------------------------------------------------------
    def _bind(self) -> None:
        """Follow the cache from the running loop (the first stream, or a new server's)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is loop:
                return
            self._loop, self._scheduled = loop, False
        self._clients.clear()  # streams of a loop that is gone
        self._ending = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._unsubscribe = self.cache.subscribe(self._on_change)
        self._inbox.clear()
        self._history.clear()
        self._last = self.cache.snapshot()  # after subscribing: nothing falls in between

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._inbox:
            snapshot, ids = self._inbox.popleft()
            if snapshot.version <= self._last.version:
                continue  # in the snapshot taken when the hub bound to this loop
            change: Change | None = None  # a gap: nothing before it can be resumed
            if snapshot.version == self._last.version + 1:
                change = Change(snapshot, self._last, ids)
                self._history.append(change)
            else:
                self._history.clear()
            self._last = snapshot
            for client in self._clients:
                client.offer(change)

    def _missed(self, last_event_id: str | None) -> list[Change] | None:
        """The changes after ``last_event_id``; None when they cannot be told (a reset)."""
        if not last_event_id:
            return None
        run, _, text = last_event_id.partition(":")
        if run != self.run or not text.isdigit():
            return None
        seen = int(text)
        if seen > self._last.version:
            return None
        if seen == self._last.version:
            return []
        if not self._history or self._history[0].previous.version > seen:
            return None  # older than what is kept
        return [change for change in self._history if change.version > seen]

    def end_streams(self) -> None:
        """End every open stream (a stopping server waits for them); from any thread."""
        with self._lock:
            loop = self._loop

        def end() -> None:
            self._ending = True
            for client in self._clients:
                client.wake.set()

        if loop is None:
            self._ending = True
            return
        try:
            loop.call_soon_threadsafe(end)
        except RuntimeError:
            self._ending = True

    def close(self) -> None:
        """Stop following the cache."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _event(self, name: str, version: int, data: str) -> bytes:
        return f"id: {self.run}:{version}\nevent: {name}\ndata: {data}\n\n".encode()

    async def stream(
        self,
        last_event_id: str | None,
        batch: str | None,
        *,
        records: bool = True,
        lifetime: float | None = None,
        retry_ms: int = RETRY_MS,
    ) -> AsyncIterator[bytes]:
        """One client's events: what it missed (or a reset), then each change as it comes.

        Without ``records`` each event carries the version only (a client that only
        needs to know that something changed); with a ``batch`` too, only for changes that
        ``touches`` that batch (the others move the event id on without an event). With a
        ``lifetime`` the stream ends after that many seconds and the client comes back
        with its ``Last-Event-ID``.
        """
        self._bind()
        self._drain()  # what the cache published before this: part of "missed", not queued
        client = _Client(QUEUE_SIZE)
        missed = self._missed(last_event_id)
        sent = self._last
        self._clients.add(client)
        loop = asyncio.get_running_loop()
        deadline = None if lifetime is None else loop.time() + lifetime

        def reset() -> bytes:
            data = reset_data(sent, batch) if records else _json({"version": sent.version})
            return self._event("reset", sent.version, data)

        def change(changes: list[Change]) -> bytes:
            if not records:
                if batch is not None and not any(touches(c, batch) for c in changes):
                    # Nothing to fire, but the id moves on: a client that comes back
                    # resumes from here, not from a change that left the history.
                    return f"id: {self.run}:{sent.version}\n\n".encode()
                return self._event("change", sent.version, version_data(changes, batch))
            data = change_data(changes, batch)
            return b"" if data is None else self._event("change", sent.version, data)

        try:
            head = f"retry: {retry_ms}\n\n".encode()
            yield head + (reset() if missed is None else change(missed) if missed else b"")
            while not self._ending:
                if not client.queue and not client.reset:
                    left = KEEP_ALIVE_SECONDS if deadline is None else deadline - loop.time()
                    if left <= 0:
                        return
                    try:
                        await asyncio.wait_for(client.wake.wait(), min(left, KEEP_ALIVE_SECONDS))
                    except TimeoutError:
                        if deadline is None or loop.time() < deadline:
                            yield b": keep-alive\n\n"
                        continue
                    finally:
                        client.wake.clear()
                    continue
                if client.reset:
                    client.reset = False
                    client.queue.clear()
                    sent = self._last
                    yield reset()
                    continue
                changes = [c for c in client.queue if c.version > sent.version]
                client.queue.clear()
                if changes:
                    sent = changes[-1].snapshot
                    if event := change(changes):
                        yield event
        finally:
            self._clients.discard(client)
