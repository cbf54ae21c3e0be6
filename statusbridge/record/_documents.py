"""Many schema-1 documents at once (a database's initial load), parsed as one JSON array.

The fast path only: all or nothing, and what it takes ``decode_job`` takes too, into
the same job. Anything it refuses is decoded one document at a time by ``decode_job``,
which words what is wrong.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec

from statusbridge.record._codec import _pairs_and_colons, _utc_time
from statusbridge.record._frozen import EMPTY, freeze
from statusbridge.record._ids import validate_job_id
from statusbridge.record._model import BatchJob, BatchStatus, checked_job

__all__ = ["decode_documents"]

_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class _WrittenDocument(msgspec.Struct, gc=False):
    """A schema-1 document with every key, each value of its JSON type (checked in C).

    The fields in ``_WRITTEN_KEYS`` order, so ``astuple`` is the values as
    ``_colons_if_read_once`` counts them. Unknown keys are skipped by msgspec, so
    their colons are not counted and such a batch is refused.
    """

    schema: Literal[1]
    id: str
    status: BatchStatus
    params: Any
    result: Any
    error_message: str | None
    progress: _Unit | None
    message: str
    batch_id: str | None
    meta: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    updated_at: str | None
    seq: Annotated[int, msgspec.Meta(ge=0)]
    owner: str | None
    owner_start: int | None
    owner_machine: str | None
    cancel_requested: bool
    heartbeat_at: str | None


_DECODE_WRITTEN = msgspec.json.Decoder(list[_WrittenDocument]).decode
_KEYS = len(_WrittenDocument.__struct_fields__)
# The fields whose strings may hold colons (ids and status values cannot), as in _codec.
_TEXT_VALUES = attrgetter("error_message", "message", "owner", "owner_machine", "created_at",
                          "started_at", "completed_at", "updated_at", "heartbeat_at")  # fmt: skip
_VALUES = msgspec.structs.astuple
_COMPLETED = BatchStatus.COMPLETED


def decode_documents(ids: list[str], docs: list[str]) -> list[BatchJob] | None:
    """The jobs of ``docs`` (``docs[i]`` stored under ``ids[i]``), parsed as one JSON array.

    All or nothing: None unless every document is in the written form and valid
    (every key read once, see ``_quick_job``), and then the caller decodes each on
    its own with ``decode_job``, which words what is wrong. What this takes,
    ``decode_job`` takes too, into the same job (tests check both on the same
    documents).
    """
    try:
        text = "[" + ",".join(docs) + "]"
    except TypeError:  # a document stored as a blob
        return None
    if "\\u" in text:
        return None
    try:
        written = _DECODE_WRITTEN(text)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if len(written) != len(ids):
        return None
    jobs: list[BatchJob] = []
    # The colons of the text if every key was read once (see ``_colons_if_read_once``):
    # a pair's each, the strings' own, counted for the whole array at once; the
    # nested values' (rare) are added per document below.
    colons = len(written) * _KEYS + "".join(filter(None, chain.from_iterable(
        map(_TEXT_VALUES, written)))).count(":")  # fmt: skip
    try:
        for expected_id, document in zip(ids, written, strict=True):
            values = _VALUES(document)
            (_schema, job_id, status, params, result, error_message, progress, message, batch_id,
             meta, created_at, started_at, completed_at, updated_at, seq, owner, owner_start,
             owner_machine, cancel_requested, heartbeat_at) = values  # fmt: skip
            if job_id != expected_id:
                return None
            validate_job_id(job_id)
            if batch_id is not None:
                validate_job_id(batch_id)
            if progress is None:
                known, progress = False, 1.0 if status is _COMPLETED else 0.0
            else:
                known = True
            if params is not None:
                colons += _pairs_and_colons(params)
                params = freeze(params, _path="params")
            if result is not None:
                colons += _pairs_and_colons(result)
                result = freeze(result, _path="result")
            if meta:
                colons += _pairs_and_colons(meta)
                meta = freeze(meta, _path="meta")
            else:
                meta = EMPTY
            times: tuple[Any, ...]
            times = (created_at, started_at, completed_at, updated_at, heartbeat_at)
            if times != _NO_TIMES:
                times = tuple(map(_utc_time, times))
                if False in times:
                    return None
            jobs.append(
                checked_job((job_id, status, params, result, error_message, progress, message,
                             batch_id, meta, *times[:4], seq, owner, owner_start, owner_machine,
                             cancel_requested, times[4], known))
            )  # fmt: skip
    except (TypeError, ValueError):  # an id, or a value freeze() refuses
        return None
    return jobs if colons == text.count(":") else None


_NO_TIMES = (None, None, None, None, None)
