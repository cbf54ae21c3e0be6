"""File format, schema 1: one UTF-8 JSON object per job.

Decoding is total: bytes in, a valid ``BatchJob`` or ``InvalidRecordError`` out,
never any other exception, so a reader can skip bad files without guessing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from statusbridge.errors import InvalidRecordError
from statusbridge.record._frozen import MAX_NESTING, thaw
from statusbridge.record._model import FIELD_NAMES, BatchJob

__all__ = ["SCHEMA_VERSION", "decode_job", "encode_job", "job_to_dict"]

SCHEMA_VERSION = 1

_TIME_FIELDS = ("created_at", "started_at", "completed_at", "updated_at", "heartbeat_at")
_DECODABLE = frozenset(FIELD_NAMES)


def job_to_dict(job: BatchJob) -> dict[str, Any]:
    """The JSON-ready document for ``job`` (plain dicts/lists, ISO-8601 timestamps)."""
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION}
    for name in FIELD_NAMES:
        value: Any = job.reported_progress if name == "progress" else getattr(job, name)
        if name in _TIME_FIELDS:
            value = None if value is None else value.isoformat()
        elif name == "status":
            value = value.value
        elif name in ("params", "result", "meta"):
            value = thaw(value)
        doc[name] = value
    return doc


def encode_job(job: BatchJob) -> bytes:
    """Serialise ``job`` as a schema-1 document.

    One line, not indented: ``indent`` forces json's pure-Python encoder (about 4x
    slower); ``python -m json.tool`` or ``jq`` pretty-print a file for a person.
    """
    return json.dumps(job_to_dict(job), ensure_ascii=False, allow_nan=False).encode() + b"\n"


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
    if not data:
        raise InvalidRecordError("empty file")
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
