"""What ``Definitions`` keeps between reads: the bytes last seen, and the jobs' JSON.

A definition read again unchanged is not decoded again, and a change encodes only
its few fields; neither may hide another writer's change.
"""

from __future__ import annotations

import json
from dataclasses import replace

from statusbridge.jobs._definition import BatchDefinition
from statusbridge.jobs._definitions import Definitions
from statusbridge.record._frozen import freeze
from statusbridge.record._model import utc_now
from statusbridge.store._shelf import open_shelf


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
