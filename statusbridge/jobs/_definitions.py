"""Batch definitions on their shelf (a folder, or the status server), cached in memory.

Every change is a compare-and-swap on the stored definition, read fresh, so no
writer's change is lost and a removed definition is never brought back. The
in-memory copies may lag behind other processes: ``lookup`` loads batches
others created, ``reread`` refreshes one (at most every RELIST_SECONDS).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from statusbridge.errors import StatusBridgeError, UnknownJobError
from statusbridge.jobs._definition import (
    BatchDefinition,
    is_valid_job_id,
    job_marked_cancelled,
    marked_cancelled,
)
from statusbridge.store._location import is_url
from statusbridge.store._shelf import Shelf, open_shelf

__all__ = [
    "CANCEL_SETTLE_SECONDS",
    "CHANGE_TRIES",
    "MARKER_LOOK_SECONDS",
    "RELIST_SECONDS",
    "Definitions",
    "mark_batch_cancelled",
]

logger = logging.getLogger(__name__)

# How often, at most, list_batches() lists the batch folder for batches that
# other processes created (one listdir; everything else is in memory).
RELIST_SECONDS = 1.0

# How many times a definition is read again when other writers keep changing it
# between our read and our compare-and-swap (each retry means one of them won).
CHANGE_TRIES = 100

# How long a look at a batch's cancel markers stands for the jobs its owner starts, and
# how long a cancel waits after writing a marker before it returns (see cancel_marked):
# longer, so that a worker paused between its look and taking the job is covered too.
MARKER_LOOK_SECONDS = 0.05
CANCEL_SETTLE_SECONDS = 4 * MARKER_LOOK_SECONDS


class Definitions:
    """The batch definitions of one shelf, by id."""

    def __init__(self, shelf: Shelf, *, load: bool = True) -> None:
        """``load``: read every definition now (a one-off change, say from the CLI, needs not)."""
        self.shelf = shelf
        self._lock = threading.Lock()
        self._batches: dict[str, BatchDefinition] = {}
        self._missing: dict[str, float] = {}  # ids looked for and not found, when
        self._reread_at: dict[str, float] = {}  # batches whose cached copy may lag, when re-read
        self._listed_at = 0.0
        # The bytes last read or written of each batch, with their definition: reading
        # the same bytes again decodes nothing (the feed reads the cancel marker often).
        self._stored: dict[str, tuple[bytes, BatchDefinition]] = {}
        # When the cancel markers were last looked at, and the definition seen (``cancel_marked``).
        self._looks: dict[str, tuple[float, BatchDefinition]] = {}
        # Each batch's jobs as JSON text, with the tuples it encodes: kept across changes.
        self._jobs_text: dict[str, tuple[tuple[str, ...], tuple[Any, ...], str]] = {}
        if load:
            self.relist(force=True)

    def all(self) -> list[BatchDefinition]:
        """Every definition known here (``relist`` first to include others' new ones)."""
        with self._lock:
            return list(self._batches.values())

    def forget(self, batch_id: str) -> None:
        with self._lock:
            self._batches.pop(batch_id, None)
            self._stored.pop(batch_id, None)
            self._looks.pop(batch_id, None)
            self._jobs_text.pop(batch_id, None)

    def encode(self, definition: BatchDefinition) -> bytes:
        """``definition.to_json()``, encoding its jobs only if no earlier version did."""
        kept = self._jobs_text.get(definition.id)
        if kept is None or kept[0] is not definition.job_ids or kept[1] is not definition.params:
            kept = (definition.job_ids, definition.params, definition.jobs_json())
            with self._lock:
                self._jobs_text[definition.id] = kept
        return definition.to_json(jobs_json=kept[2])

    @property
    def batch_dir(self) -> Path:
        """The folder of the definitions (the status URL's text when they live on a server)."""
        return Path(self.shelf.label)

    def _decode(self, batch_id: str, data: bytes) -> BatchDefinition | None:
        where = f"{self.shelf.label}: {batch_id}.json"
        try:
            definition = BatchDefinition.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping batch file %s: %s", where, exc)
            return None
        if batch_id != definition.id:
            logger.warning("skipping batch file %s: it defines batch %r", where, definition.id)
            return None
        return definition

    def read(self, batch_id: str) -> BatchDefinition | None:
        try:
            found = self.fresh(batch_id)
        except OSError as exc:
            logger.warning("skipping batch file %s: %s: %s", self.shelf.label, batch_id, exc)
            return None
        return None if found is None else found[1]

    def fresh(self, batch_id: str) -> tuple[bytes, BatchDefinition] | None:
        """The stored bytes and their definition, or None; OSError if the shelf fails."""
        data = self.shelf.get(batch_id)
        if data is None:
            return None
        known = self._stored.get(batch_id)
        if known is not None and known[0] == data:
            return known
        definition = self._decode(batch_id, data)
        if definition is None:
            return None
        self._note_stored(data, definition)
        return data, definition

    def cancel_marked(self, batch_id: str, job_id: str | None = None) -> bool:
        """Whether the batch carries the cancel marker (``mark_cancelled``), or ``job_id``
        is among its jobs cancelled while they had no record (``mark_job_cancelled``).

        Cheap enough to ask before each job starts. A look stands for
        ``MARKER_LOOK_SECONDS``, and both cancels return ``CANCEL_SETTLE_SECONDS`` (four
        times that) after their write: a job taken after a cancel returned was taken on a
        look that began after the cancel's write, so it saw it. A look, while the stored
        definition is the one last read here (same size: every change makes it longer),
        is one look at its size; else the definition is read again.
        """
        now = time.monotonic()
        look = self._looks.get(batch_id)
        if look is None or now - look[0] >= MARKER_LOOK_SECONDS:
            definition = self._look(batch_id, now)
        else:
            definition = look[1]
        if definition is None:
            return False
        return definition.cancelled_at is not None or job_id in definition.cancelled_jobs

    def _look(self, batch_id: str, began: float) -> BatchDefinition | None:
        """The stored definition, read at ``began`` or after (None if there is none)."""
        known = self._stored.get(batch_id)
        if known is not None and known[1].cancelled_at is not None:
            definition: BatchDefinition | None = known[1]  # a marker is never taken back
        elif known is not None and self.shelf.size(batch_id) == len(known[0]):
            definition = known[1]
        else:
            found = self.fresh(batch_id)
            definition = None if found is None else found[1]
        if definition is not None:
            with self._lock:
                # The newest look wins: one that began earlier and ended later says less.
                latest = self._looks.get(batch_id)
                if latest is None or latest[0] <= began:
                    self._looks[batch_id] = (began, definition)
        return definition

    def _note_stored(self, data: bytes, definition: BatchDefinition) -> None:
        with self._lock:
            self._stored[definition.id] = (data, definition)

    def relist(self, *, force: bool = False) -> None:
        """Pick up batches other processes created (at most every RELIST_SECONDS)."""
        now = time.monotonic()
        if not force and now - self._listed_at < RELIST_SECONDS:
            return
        self._listed_at = now
        for batch_id in self.shelf.names():
            if batch_id in self._batches or not is_valid_job_id(batch_id):
                continue
            definition = self.read(batch_id)
            if definition is not None:
                with self._lock:
                    self._batches.setdefault(definition.id, definition)

    def lookup(self, batch_id: str) -> BatchDefinition | None:
        """The definition, loading it from disk if another process created it since."""
        definition = self._batches.get(batch_id)
        if definition is not None or not is_valid_job_id(batch_id):
            return definition
        now = time.monotonic()
        if now - self._missing.get(batch_id, -RELIST_SECONDS) < RELIST_SECONDS:
            return None
        definition = self.read(batch_id)
        if definition is None:
            self._missing[batch_id] = now
            if len(self._missing) > 10_000:
                self._missing.clear()
            return None
        with self._lock:
            return self._batches.setdefault(batch_id, definition)

    def definition(self, batch_id: str) -> BatchDefinition:
        definition = self.lookup(batch_id)
        if definition is None:
            raise UnknownJobError(f"unknown batch id {batch_id!r}")
        return definition

    def store(self, definition: BatchDefinition, *, exclusive: bool = False) -> None:
        data = self.encode(definition)
        self.shelf.put(definition.id, data, exclusive=exclusive)
        self._note_stored(data, definition)
        self.remember(definition)

    def change(
        self, batch_id: str, change: Callable[[BatchDefinition], BatchDefinition | None]
    ) -> BatchDefinition | None:
        """Apply ``change`` to the stored definition, read fresh, with a compare-and-swap.

        ``change(current)`` returns the new definition, or None to leave it as it
        is; it may raise to refuse. When another process or manager changed the
        definition between our read and our write, we read again and ask
        ``change`` again, so no writer's update is lost. Returns the definition as
        stored now (None if there is none); the cached copy is updated to it.
        """
        for _ in range(CHANGE_TRIES):
            found = self.fresh(batch_id)
            if found is None:
                return None
            data, current = found
            self.remember(current)
            new = change(current)
            if new is None:
                return current
            encoded = self.encode(new)
            if self.shelf.replace(batch_id, data, encoded):
                self._note_stored(encoded, new)
                self.remember(new)
                return new
            logger.debug("batch %s: changed by another writer meanwhile; reading again", batch_id)
        raise StatusBridgeError(
            f"batch {batch_id!r}: its definition in {self.shelf.label} changed under each of "
            f"{CHANGE_TRIES} compare-and-swaps; is another program rewriting it?"
        )

    def mark_cancelled(self, batch_id: str, now: datetime) -> BatchDefinition | None:
        """Set the cancel marker of a started, unfinished batch (compare-and-swap).

        Whoever feeds the batch checks it before it starts a job. A marked batch is
        returned ``CANCEL_SETTLE_SECONDS`` after the write, when every such check sees
        it (see ``cancel_marked``). Returns the definition as stored now (marked by us,
        by someone before, or not started), None if there is none.
        """
        stored = self.change(batch_id, lambda current: marked_cancelled(current, now))
        if stored is not None and stored.cancelled_at is not None and stored.final is None:
            self.settle()
        return stored

    def mark_job_cancelled(self, batch_id: str, job_id: str) -> BatchDefinition | None:
        """Name ``job_id`` among the started, unfinished batch's cancelled jobs, which its
        owner never starts (compare-and-swap; ``settle`` before telling anyone it is done).
        Returns the definition as stored now, None if there is none."""
        return self.change(batch_id, lambda current: job_marked_cancelled(current, job_id))

    @staticmethod
    def settle() -> None:
        """Wait until every owner's look at the markers (``cancel_marked``) sees a write
        made before this call."""
        time.sleep(CANCEL_SETTLE_SECONDS)

    def remember(self, definition: BatchDefinition) -> None:
        with self._lock:
            self._batches[definition.id] = definition

    def reread(self, definition: BatchDefinition) -> BatchDefinition:
        """The definition as the shelf has it now (at most every RELIST_SECONDS per batch):
        the cached copy lags when another process starts the batch or saves its counts."""
        now = time.monotonic()
        if now - self._reread_at.get(definition.id, -RELIST_SECONDS) < RELIST_SECONDS:
            return definition
        self._reread_at[definition.id] = now
        fresh = self.read(definition.id)
        if fresh is None:
            return definition
        self.remember(fresh)
        return fresh


def mark_batch_cancelled(
    batch_id: str, where: str | os.PathLike[str], now: datetime
) -> BatchDefinition | None:
    """Set the cancel marker of batch ``batch_id`` in the definitions kept at ``where``
    (a ``BatchManager``'s ``batch_dir``): for a cancel from outside the manager, the CLI
    or a web route. The definition as stored now; None if there is none there (a name no
    definition can have, a folder without definitions). Errors of the location raise.

    Set before the records are cancelled: whoever feeds the batch checks the marker
    before it starts a job, so a job with no record yet never starts.
    """
    if not is_valid_job_id(batch_id):
        return None
    if not is_url(where) and not Path(where).is_dir():
        return None
    shelf = open_shelf(where, create=False)
    try:
        return Definitions(shelf, load=False).mark_cancelled(batch_id, now)
    finally:
        shelf.close()
