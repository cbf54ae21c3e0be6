"""What ``Definitions`` keeps between reads: the bytes last seen, the jobs' JSON, and
the last look at the cancel markers.

A definition read again unchanged is not decoded again, a change encodes only its
few fields, and a look at the markers stands for a while; none may hide another
writer's change (a cancel waits until every later look sees it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from statusbridge.jobs._definition import BatchDefinition
from statusbridge.jobs._definitions import MARKER_LOOK_SECONDS, Definitions
from statusbridge.record._frozen import freeze
from statusbridge.record._model import utc_now
from statusbridge.store._shelf import Shelf, open_shelf


def _definition(batch_id: str, n: int) -> BatchDefinition:
    return BatchDefinition(
        id=batch_id,
        name="kept",
        job_ids=tuple(f"{batch_id}-{i:04d}" for i in range(n)),
        params=tuple(freeze({"i": i, "tags": ["a", "é"]}) for i in range(n)),
        created_at=utc_now(),
    )


def test_unchanged_bytes_give_the_same_definition_and_another_writers_change_is_seen(
    batch_locations: tuple[str, str],
) -> None:
    shelf_a, shelf_b = open_shelf(batch_locations[0]), open_shelf(batch_locations[0])
    try:
        ours, theirs = Definitions(shelf_a), Definitions(shelf_b, load=False)
        ours.store(_definition("batch-k", 5), exclusive=True)
        first = ours.fresh("batch-k")
        assert first is not None
        again = ours.fresh("batch-k")
        assert again is not None and again[1] is first[1]  # not decoded again

        marked = theirs.mark_cancelled("batch-k", utc_now())
        assert marked is not None and marked.cancelled_at is None  # not started: no marker
        started = theirs.change("batch-k", lambda d: replace(d, started_at=utc_now()))
        assert started is not None
        assert theirs.mark_cancelled("batch-k", utc_now()) is not None

        seen = ours.fresh("batch-k")
        assert seen is not None and seen[1] is not first[1]
        assert seen[1].started_at is not None and seen[1].cancelled_at is not None
    finally:
        shelf_a.close()
        shelf_b.close()


def test_a_change_encodes_the_same_document_as_a_whole_encode(
    batch_locations: tuple[str, str],
) -> None:
    shelf = open_shelf(batch_locations[0])
    try:
        defs = Definitions(shelf)
        defs.store(_definition("batch-e", 4), exclusive=True)
        now = utc_now()
        changed = defs.change("batch-e", lambda d: replace(d, started_at=now, cancelled_at=now))
        assert changed is not None
        stored = shelf.get("batch-e")
        assert stored == changed.to_json()  # the kept jobs' text is what a fresh encode gives
        doc = json.loads(stored)
        assert [j["params"]["i"] for j in doc["jobs"]] == [0, 1, 2, 3]
        assert doc["started_at"] == doc["cancelled_at"] == now.isoformat()
        assert BatchDefinition.from_json(stored) == changed
        # A definition with other jobs under the same id is encoded afresh.
        other = replace(changed, job_ids=("batch-e-x",), params=(freeze({"x": 1}),))
        assert json.loads(defs.encode(other))["jobs"] == [{"id": "batch-e-x", "params": {"x": 1}}]
    finally:
        shelf.close()


# -- looks at the cancel markers -------------------------------------------------------------


class CountingShelf:
    """A real shelf, counting the reads a look at the markers makes."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf
        self.label = shelf.label
        self.reads = 0

    def get(self, name: str) -> bytes | None:
        self.reads += 1
        return self.shelf.get(name)

    def size(self, name: str) -> int | None:
        self.reads += 1
        return self.shelf.size(name)

    def names(self) -> list[str]:
        return self.shelf.names()

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self.shelf.put(name, data, exclusive=exclusive)

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        return self.shelf.replace(name, expected, data)

    def remove(self, name: str) -> None:
        self.shelf.remove(name)

    def close(self) -> None:
        self.shelf.close()


@contextmanager
def two_views(location: str) -> Iterator[tuple[Definitions, Definitions]]:
    """The definitions at ``location`` as two processes see them: the owner, another."""
    shelf_a, shelf_b = open_shelf(location), open_shelf(location)
    try:
        yield Definitions(shelf_a), Definitions(shelf_b, load=False)
    finally:
        shelf_a.close()
        shelf_b.close()


def _started(defs: Definitions, batch_id: str, n: int = 3) -> None:
    defs.store(_definition(batch_id, n), exclusive=True)
    defs.change(batch_id, lambda d: replace(d, started_at=utc_now()))


def test_a_cancel_returns_only_once_every_look_at_the_marker_sees_it(
    batch_locations: tuple[str, str],
) -> None:
    """The owner's look stands for a while; the cancel from elsewhere waits longer."""
    with two_views(batch_locations[0]) as (owner, other):
        _started(owner, "batch-m")
        assert not owner.cancel_marked("batch-m")  # a look, just now
        marked = other.mark_cancelled("batch-m", utc_now())
        assert marked is not None and marked.cancelled_at is not None
        assert owner.cancel_marked("batch-m")  # its first look since sees the marker
        assert owner.cancel_marked("batch-m", "batch-m-0002")  # every job of it


def test_a_job_cancelled_by_itself_is_named_in_the_definition(
    batch_locations: tuple[str, str],
) -> None:
    with two_views(batch_locations[0]) as (owner, other):
        _started(owner, "batch-j")
        assert not owner.cancel_marked("batch-j", "batch-j-0001")
        named = other.mark_job_cancelled("batch-j", "batch-j-0001")
        assert named is not None and named.cancelled_jobs == {"batch-j-0001"}
        other.settle()  # as a cancel does before it returns
        assert owner.cancel_marked("batch-j", "batch-j-0001")
        assert not owner.cancel_marked("batch-j", "batch-j-0000")
        assert not owner.cancel_marked("batch-j")  # the batch goes on
        stored = owner.shelf.get("batch-j")
        assert stored is not None and json.loads(stored)["cancelled_jobs"] == ["batch-j-0001"]
        assert BatchDefinition.from_json(stored) == named
        # Not a job of the batch, or named already: nothing changes.
        assert other.mark_job_cancelled("batch-j", "batch-x-0001") == named
        assert other.mark_job_cancelled("batch-j", "batch-j-0001") == named


def test_a_look_at_the_markers_stands_for_the_jobs_started_meanwhile(
    batch_locations: tuple[str, str],
) -> None:
    """Asked before every job, the markers are read at most once per MARKER_LOOK_SECONDS."""
    counting = CountingShelf(open_shelf(batch_locations[0]))
    try:
        owner = Definitions(counting)
        _started(owner, "batch-l", 100)
        counting.reads = 0
        began = time.monotonic()
        for i in range(2000):
            assert not owner.cancel_marked("batch-l", f"batch-l-{i % 100:04d}")
        took = time.monotonic() - began
        assert counting.reads <= took / MARKER_LOOK_SECONDS + 1
    finally:
        counting.close()
