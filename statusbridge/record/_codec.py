"""File format, schema 1: one UTF-8 JSON object per job.

Decoding is total: bytes in, a valid ``BatchJob`` or ``InvalidRecordError`` out,
never any other exception, so a reader can skip bad files without guessing.

Two kinds of valid JSON that UTF-8 cannot carry as they are, decided here once for
every backend and view: a lone surrogate escape (``"\\ud83d"``, what JavaScript's
``JSON.stringify`` makes of a string cut mid-emoji) is read and written as U+FFFD, the
replacement character, and a leading UTF-8 byte order mark is skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import msgspec

from statusbridge.errors import InvalidRecordError
from statusbridge.record._frozen import EMPTY, MAX_NESTING, FrozenMap, freeze, thaw
from statusbridge.record._ids import validate_job_id
from statusbridge.record._model import FIELD_NAMES, BatchJob, BatchStatus, checked_job
from statusbridge.record._texts import STATUS_TEXT, lasting_time

__all__ = [
    "SCHEMA_VERSION",
    "decode_job",
    "encode_job",
    "encode_job_as_stored",
    "job_text",
    "job_text_as_stored",
    "job_to_dict",
]

SCHEMA_VERSION = 1

_TIME_FIELDS = ("created_at", "started_at", "completed_at", "updated_at", "heartbeat_at")
_DECODABLE = frozenset(FIELD_NAMES)
# The keys in the order ``job_to_dict`` writes them: documents that have exactly
# these take the fast path of ``_decode`` (see ``_well_formed_job``).
_WRITTEN_KEYS = ("schema", *FIELD_NAMES)
_STATUS_BY_VALUE = {status.value: status for status in BatchStatus}


# Every stored field's value and ``progress_known``, in one call (``job_to_dict``).
_STORED_VALUES = attrgetter(*FIELD_NAMES, "progress_known")


def job_to_dict(job: BatchJob) -> dict[str, Any]:
    """The JSON-ready document for ``job`` (plain dicts/lists, ISO-8601 timestamps)."""
    return _document(job, thaw)


def _document(job: BatchJob, nested: Callable[[Any], Any]) -> dict[str, Any]:
    """The document with ``nested`` applied to params, result and meta."""
    (job_id, status, params, result, error_message, progress, message, batch_id, meta,
     created_at, started_at, completed_at, updated_at, seq, owner, owner_start, owner_machine,
     cancel_requested, heartbeat_at, progress_known) = _STORED_VALUES(job)  # fmt: skip
    return {
        "schema": SCHEMA_VERSION,
        "id": job_id,
        "status": STATUS_TEXT[status],
        "params": nested(params),
        "result": nested(result),
        "error_message": error_message,
        "progress": progress if progress_known else None,
        "message": message,
        "batch_id": batch_id,
        "meta": nested(meta),
        "created_at": None if created_at is None else lasting_time(created_at),
        "started_at": None if started_at is None else lasting_time(started_at),
        "completed_at": None if completed_at is None else lasting_time(completed_at),
        "updated_at": None if updated_at is None else updated_at.isoformat(),
        "seq": seq,
        "owner": owner,
        "owner_start": owner_start,
        "owner_machine": owner_machine,
        "cancel_requested": cancel_requested,
        "heartbeat_at": None if heartbeat_at is None else heartbeat_at.isoformat(),
    }


# json.dumps with options builds a JSONEncoder per call; one shared encoder is stateless.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# In JSON text, the only way to spell one (a raw one is not UTF-8): \uD800 to \uDFFF.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_BOM = b"\xef\xbb\xbf"


def encode_job(job: BatchJob) -> bytes:
    """Serialise ``job`` as a schema-1 document.

    One line, not indented: ``indent`` forces json's pure-Python encoder (about 4x
    slower); ``python -m json.tool`` or ``jq`` pretty-print a file for a person.
    """
    return encode_job_as_stored(job)[0]


def encode_job_as_stored(job: BatchJob) -> tuple[bytes, BatchJob]:
    """The document, and the record a reader decodes from it: ``job`` itself, unless a
    lone surrogate had to be replaced (a store that remembers what it wrote, or hands
    it to a cache, must remember what was stored)."""
    text = _ENCODER.encode(job_to_dict(job))
    try:
        return text.encode() + b"\n", job
    except UnicodeEncodeError:  # a lone surrogate in some string: see the module's docstring
        data = _LONE_SURROGATE.sub("\ufffd", text).encode() + b"\n"
        return data, decode_job(data, expected_id=job.id)


def _frozen_map_data(value: Any) -> Any:
    if type(value) is FrozenMap:
        return value._data  # its values are frozen: the encoder calls this again for those
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_COMPACT_ENCODE = msgspec.json.Encoder(enc_hook=_frozen_map_data).encode


def job_text(job: BatchJob) -> str:
    """``job``'s schema-1 document as compact JSON text (no spaces, no newline).

    The same document as ``encode_job``, encoded by msgspec in C without thawing
    params, result and meta first. A value msgspec does not take (a lone
    surrogate, an int beyond 64 bits, a subclass of a JSON type) takes the
    ``json`` path of ``encode_job``, which decides and words it.
    """
    return job_text_as_stored(job)[0]


def job_text_as_stored(job: BatchJob) -> tuple[str, BatchJob]:
    """``job_text``, and the record a reader decodes from it (see ``encode_job_as_stored``)."""
    try:
        return _COMPACT_ENCODE(_document(job, _as_is)).decode(), job
    except (msgspec.MsgspecError, TypeError, ValueError, OverflowError):
        data, stored = encode_job_as_stored(job)
        return data.decode().rstrip("\n"), stored


def _as_is(value: Any) -> Any:
    return value


def text_as_stored(text: str) -> str:
    """``text`` as a store keeps it: each lone surrogate (not UTF-8) becomes U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise InvalidRecordError(f"duplicate key {dup!r}")
    return result


def _no_constants(name: str) -> Any:
    raise InvalidRecordError(f"{name} is not valid JSON")


# One decoder, built once: json.loads(..., object_pairs_hook=...) builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def _parse_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecordError(f"{name} must be an ISO-8601 string or null")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecordError(f"{name} {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidRecordError(f"{name} {value!r} has no UTC offset")
    return parsed


def decode_job(
    data: bytes, *, source: str | None = None, expected_id: str | None = None
) -> BatchJob:
    """Decode one status document; raise InvalidRecordError with an actionable reason.

    >>> try:
    ...     decode_job(b'{"schema": 2, "id": "a"}')
    ... except InvalidRecordError as exc:
    ...     print(exc.reason)
    schema version 2 is newer than this statusbridge reads (1); upgrade statusbridge
    """
    try:
        return _decode(data, expected_id)
    except InvalidRecordError as exc:
        if source is not None and exc.source is None:
            raise InvalidRecordError(exc.reason, source=source) from None
        raise
    except (TypeError, ValueError) as exc:
        # BatchJob's own validation: already a sentence naming the field.
        raise InvalidRecordError(str(exc), source=source) from None
    except RecursionError:
        # Only json's own parser gets here, far beyond the limit freeze() enforces on
        # params, result and meta (a TypeError/ValueError naming the path, above).
        raise InvalidRecordError(
            f"JSON nested too deeply (more than {MAX_NESTING} levels)", source=source
        ) from None


def _decode(data: bytes, expected_id: str | None) -> BatchJob:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data:
        raise InvalidRecordError("empty file")
    job = _quick_job(data, expected_id)
    if job is not None:
        return job
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidRecordError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidRecordError(f"top level must be a JSON object, not {type(doc).__name__}")
    if _SURROGATE_ESCAPE.search(data):
        doc = _without_lone_surrogates(doc)
    job = _well_formed_job(doc, expected_id)
    return job if job is not None else _checked_doc(doc, expected_id)


def _quick_job(data: bytes, expected_id: str | None) -> BatchJob | None:
    """The job of a document in the written form, parsed by msgspec; None: take the stdlib path.

    msgspec parses about three times faster than ``json`` and is stricter (it
    refuses what json reads as infinity, lone surrogates, a byte order mark),
    but keeps the last of duplicate keys without a word. So the result is used
    only if every key was read once: outside strings each pair has exactly one
    colon, so the document's colons must be the pairs kept plus the colons
    inside the strings kept. A duplicate adds a pair (and its strings) that
    the result does not hold; escapes (``\\u003a`` is a colon) are left to
    the stdlib path. Whatever this refuses, the stdlib path decides and words.
    """
    if _ESCAPE in data:
        return None
    try:
        doc = _MSGSPEC_DECODE(data)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    job = _well_formed_job(doc, expected_id)
    if job is None or data.count(b":") != _colons_if_read_once(tuple(doc.values())):
        return None
    return job


_ESCAPE = b"\\u"
_MSGSPEC_DECODE = msgspec.json.Decoder().decode
# Where strings may hold colons in a well-formed document (ids and status values cannot).
_TEXT_AT = tuple(
    _WRITTEN_KEYS.index(name)
    for name in ("error_message", "message", "owner", "owner_machine", *_TIME_FIELDS)
)
_NESTED_AT = tuple(_WRITTEN_KEYS.index(name) for name in ("params", "result", "meta"))


def _colons_if_read_once(values: tuple[Any, ...]) -> int:
    """The colons a well-formed document's text has if each of its keys was read once."""
    count = len(values)
    for at in _TEXT_AT:
        text = values[at]
        if text:
            count += text.count(":")
    for at in _NESTED_AT:
        nested = values[at]
        if nested:
            count += _pairs_and_colons(nested)
    return count


def _pairs_and_colons(value: Any) -> int:
    """Key-value pairs in a decoded JSON value, plus the colons in its strings."""
    kind = type(value)
    count: int
    if kind is str:
        count = value.count(":")
    elif kind is dict:
        count = sum(1 + key.count(":") + _pairs_and_colons(item) for key, item in value.items())
    elif kind is list:
        count = sum(map(_pairs_and_colons, value))
    else:
        count = 0
    return count


def _checked_doc(doc: dict[str, Any], expected_id: str | None) -> BatchJob:
    """The general path: every check in turn, the first failure is the reason given."""
    schema = doc.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise InvalidRecordError("missing or non-integer 'schema' (expected 1)")
    if schema > SCHEMA_VERSION:
        raise InvalidRecordError(
            f"schema version {schema} is newer than this statusbridge reads "
            f"({SCHEMA_VERSION}); upgrade statusbridge"
        )
    if schema != SCHEMA_VERSION:
        raise InvalidRecordError(f"unsupported schema version {schema}")
    job_id = doc.get("id")
    if not isinstance(job_id, str):
        raise InvalidRecordError("missing or non-string 'id'")
    if expected_id is not None and job_id != expected_id:
        raise InvalidRecordError(f"id {job_id!r} does not match the file name {expected_id!r}")
    if "status" not in doc:
        raise InvalidRecordError("missing 'status'")
    if not isinstance(doc["status"], str):
        raise InvalidRecordError("'status' must be a string")
    meta = doc.get("meta")
    if meta is None:
        doc["meta"] = {}
    elif not isinstance(meta, dict):
        raise InvalidRecordError("'meta' must be a JSON object")
    for name in _TIME_FIELDS:
        value = doc.get(name)
        if value is not None:
            doc[name] = _parse_time(name, value)
    if "message" in doc and doc["message"] is None:
        doc["message"] = ""
    del doc["schema"]
    if doc.keys() <= _DECODABLE:
        return BatchJob(**doc)
    # Unknown keys are ignored so that files written by a newer minor release
    # (new optional fields, same schema) stay readable.
    return BatchJob(**{key: value for key, value in doc.items() if key in _DECODABLE})


def _utc_time(value: object) -> datetime | bool | None:
    """A stored timestamp in final form (None stays None); False: the general path decides."""
    if value is None:
        return None
    if type(value) is not str:
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed if parsed.tzinfo is UTC else False


def _well_formed_job(doc: dict[str, Any], expected_id: str | None) -> BatchJob | None:
    """The job of a document in the form this library writes, or None to take the general path.

    Start-up decodes every record of a folder, so the usual shape gets a cheaper
    route: the keys in written order, each value of its exact JSON type and in
    final form (UTC timestamps, a valid id). It builds the BatchJob without the
    general constructor. Anything else, valid or not, returns None, and
    ``_checked_doc`` decides with its own reasons, so the two paths cannot
    disagree on what is refused or why (tests run both on the same documents).
    """
    if tuple(doc) != _WRITTEN_KEYS:
        return None
    values = tuple(doc.values())
    schema, job_id, status, params, result, error_message, progress = values[:7]
    message, batch_id, meta, created_at, started_at, completed_at, updated_at = values[7:14]
    seq, owner, owner_start, owner_machine, cancel_requested, heartbeat_at = values[14:]
    if type(schema) is not int or schema != SCHEMA_VERSION:
        return None
    if type(job_id) is not str or (expected_id is not None and job_id != expected_id):
        return None
    member = _STATUS_BY_VALUE.get(status) if type(status) is str else None
    if member is None:
        return None
    if not (
        _optional_str(error_message)
        and type(message) is str
        and _optional_str(owner)
        and _optional_str(owner_machine)
        and (owner_start is None or type(owner_start) is int)
        and type(seq) is int
        and seq >= 0
        and type(cancel_requested) is bool
    ):
        return None
    if progress is None:
        known, progress = False, 1.0 if member is BatchStatus.COMPLETED else 0.0
    elif type(progress) is float and 0.0 <= progress <= 1.0:
        known = True
    else:
        return None
    if meta is None or meta == {}:
        meta = EMPTY
    elif type(meta) is not dict:
        return None
    times = (
        _utc_time(created_at),
        _utc_time(started_at),
        _utc_time(completed_at),
        _utc_time(updated_at),
        _utc_time(heartbeat_at),
    )
    if False in times:
        return None
    try:
        validate_job_id(job_id)
        if batch_id is not None:
            if type(batch_id) is not str:
                return None
            validate_job_id(batch_id)
        # freeze() is the constructor's own conversion (and returns plain values as they are).
        params = freeze(params, _path="params")
        result = freeze(result, _path="result")
        if meta is not EMPTY:
            meta = freeze(meta, _path="meta")
    except (TypeError, ValueError):
        return None
    head = (job_id, member, params, result, error_message, progress, message, batch_id, meta)
    tail = (seq, owner, owner_start, owner_machine, cancel_requested, times[4], known)
    return checked_job((*head, *times[:4], *tail))


def _optional_str(value: object) -> bool:
    return value is None or type(value) is str
