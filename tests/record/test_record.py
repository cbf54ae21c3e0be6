"""Layer 1: BatchJob, freezing, ids and the schema-1 codec."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statusbridge import BatchJob, BatchStatus, InvalidRecordError
from statusbridge.record import FrozenMap, decode_job, encode_job, validate_job_id
from statusbridge.record._codec import (
    _DECODER,
    _checked_doc,
    _quick_job,
    _well_formed_job,
    job_text,
)
from statusbridge.record._documents import decode_documents
from statusbridge.record._frozen import thaw
from statusbridge.record._model import FIELD_NAMES, checked_job

VALID_DOC = {
    "schema": 1,
    "id": "job-1",
    "status": "running",
    "progress": 0.5,
    "created_at": "2026-01-01T00:00:00+00:00",
    "seq": 3,
}


def doc(**changes: object) -> bytes:
    return json.dumps({**VALID_DOC, **changes}).encode()


class TestBatchJob:
    def test_nested_values_are_deep_frozen(self) -> None:
        params = {"a": [1, {"b": 2}]}
        job = BatchJob("j", params=params, meta={"m": [1]})  # type: ignore[arg-type]
        params["a"].append(3)  # the caller's object is copied, not shared
        assert job.params == {"a": (1, FrozenMap({"b": 2}))}
        assert isinstance(job.params["a"], tuple)
        with pytest.raises(TypeError):
            job.meta["m"] = 2  # type: ignore[index]
        with pytest.raises(AttributeError):
            job.status = BatchStatus.FAILED  # type: ignore[misc]
        assert hash(job.meta) == hash(FrozenMap({"m": [1]}))

    def test_status_accepts_its_value(self) -> None:
        assert BatchJob("j", status="completed").status is BatchStatus.COMPLETED  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="status 'done' is not one of: pending, running"):
            BatchJob("j", status="done")  # type: ignore[arg-type]

    @pytest.mark.parametrize("progress", [-0.1, 1.5, float("nan"), float("inf")])
    def test_progress_out_of_range(self, progress: float) -> None:
        with pytest.raises(ValueError, match="progress must be between 0.0 and 1.0"):
            BatchJob("j", progress=progress)

    def test_progress_wrong_type(self) -> None:
        with pytest.raises(TypeError, match="progress must be a number"):
            BatchJob("j", progress=True)

    def test_non_json_values_refused_with_path(self) -> None:
        with pytest.raises(TypeError, match=r"params\.x: set is not JSON-serialisable"):
            BatchJob("j", params={"x": {1}})
        with pytest.raises(ValueError, match=r"result\[0\]: nan is not valid JSON"):
            BatchJob("j", result=[float("nan")])
        with pytest.raises(TypeError, match="keys must be strings"):
            BatchJob("j", meta={1: "x"})  # type: ignore[arg-type]

    def test_times_must_be_aware_and_become_utc(self) -> None:
        with pytest.raises(ValueError, match="must be timezone-aware"):
            BatchJob("j", created_at=datetime(2026, 1, 1))
        plus2 = timezone(timedelta(hours=2))
        job = BatchJob("j", created_at=datetime(2026, 1, 1, 12, tzinfo=plus2))
        assert job.created_at == datetime(2026, 1, 1, 10, tzinfo=UTC)
        assert job.created_at is not None and job.created_at.tzinfo is UTC

    def test_pickle_round_trip(self) -> None:
        import pickle

        job = BatchJob("j", params={"a": [1]}, meta={"k": "v"})  # type: ignore[arg-type]
        assert pickle.loads(pickle.dumps(job)) == job


class TestJobIds:
    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "../x",
            "a/b",
            "a\\b",
            "x\x00y",
            ".hidden",
            "-x",
            "a" * 129,
            "/abs",
            "é",
            "a b",
            "CON",
            "nul.txt",
            "com1",
            "x.",
            "a\n",
        ],
    )
    def test_refused(self, bad: str) -> None:
        with pytest.raises(ValueError, match="invalid job id"):
            validate_job_id(bad)

    @pytest.mark.parametrize("good", ["a", "A1", "job-1.part_2", "1" * 128, "console"])
    def test_accepted(self, good: str) -> None:
        assert validate_job_id(good) == good

    def test_non_string(self) -> None:
        with pytest.raises(TypeError):
            validate_job_id(5)


class TestCodec:
    def test_round_trip(self) -> None:
        now = datetime.now(UTC)
        job = BatchJob(
            "j",
            BatchStatus.FAILED,
            params={"n": [1, 2]},
            result=None,
            error_message="E: x",
            progress=1.0,
            message="ünïcode",
            batch_id="b",
            meta={"k": {"x": 1}},  # type: ignore[arg-type]
            created_at=now,
            started_at=now,
            completed_at=now,
            updated_at=now,
            seq=7,
            owner="host:1",
            cancel_requested=True,
            heartbeat_at=now,
        )
        data = encode_job(job)
        assert json.loads(data)["schema"] == 1
        assert decode_job(data) == job

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "empty file"),
            (b"\xff\xfe", "not valid UTF-8"),
            (b'{"schema": 1, "id": "j"', "not valid JSON"),
            (b"[1, 2]", "top level must be a JSON object"),
            (doc(schema=2), "schema version 2 is newer than this statusbridge reads (1)"),
            (doc(schema=0), "unsupported schema version 0"),
            (doc(schema="1"), "missing or non-integer 'schema'"),
            (doc(id=5), "non-string 'id'"),
            (doc(status="weird"), "status 'weird' is not one of"),
            (doc(progress=2), "progress must be between"),
            (doc(progress="half"), "progress must be a number"),
            (doc(created_at="yesterday"), "created_at 'yesterday' is not an ISO-8601"),
            (doc(created_at="2026-01-01T00:00:00"), "has no UTC offset"),
            (doc(created_at="0001-01-01T00:00:00+02:00"), "is out of range in UTC"),
            (doc(seq=-1), "seq must be >= 0"),
            (doc(seq=True), "seq must be an int"),
            (doc(meta=[1]), "'meta' must be a JSON object"),
            (doc(id="../x"), "invalid job id"),
            (b'{"schema": 1, "schema": 1, "id": "j", "status": "pending"}', "duplicate key"),
            (b'{"schema": 1, "id": "j", "status": "pending", "progress": NaN}', "NaN is not valid"),
            (b"[" * 100_000 + b"]" * 100_000, "nested too deeply (more than 100 levels)"),
            (doc(params=json.loads("[" * 101 + "]" * 101)), "nest more than 100 levels"),
        ],
    )
    def test_invalid_documents_give_one_error_type_with_reason(
        self, data: bytes, reason: str
    ) -> None:
        with pytest.raises(InvalidRecordError) as info:
            decode_job(data, source="j.json")
        assert reason in info.value.reason
        assert str(info.value).startswith("j.json: ")

    def test_id_must_match_file_name(self) -> None:
        with pytest.raises(InvalidRecordError, match="does not match the file name 'other'"):
            decode_job(doc(), expected_id="other")

    def test_unknown_keys_are_ignored(self) -> None:
        assert decode_job(doc(future_field=1)).id == "job-1"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(
    params=json_values,
    meta=st.dictionaries(st.text(), json_values, max_size=5),
    message=st.text(),
    progress=st.none() | st.floats(0, 1),
)
@settings(max_examples=200, deadline=None)
@pytest.mark.slow
def test_any_valid_job_round_trips(
    params: object, meta: dict[str, object], message: str, progress: float | None
) -> None:
    job = BatchJob("j", params=params, meta=meta, message=message, progress=progress)  # type: ignore[arg-type]
    again = decode_job(encode_job(job))
    assert again == job
    assert thaw(again.params) == json.loads(json.dumps(params))


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@settings(max_examples=500, deadline=None)
@pytest.mark.slow
def test_decoder_fuzz_raises_only_the_documented_error(data: bytes) -> None:
    try:
        decode_job(data)
    except InvalidRecordError:
        pass


@given(json_values)
@settings(max_examples=300, deadline=None)
@pytest.mark.slow
def test_decoder_fuzz_structured(value: object) -> None:
    candidate = {**VALID_DOC, "params": value} if isinstance(value, dict) else value
    try:
        decode_job(json.dumps(candidate).encode())
    except InvalidRecordError:
        pass


# -- the decoder's fast path (documents as statusbridge writes them) --------------------------
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and s.split(".")[0].upper() not in ("CON", "PRN", "AUX", "NUL")
)
times = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(9000, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]),
)
full_jobs = st.builds(
    BatchJob,
    id=ids,
    status=st.sampled_from(BatchStatus),
    params=json_values,
    result=json_values,
    error_message=st.none() | st.text(max_size=10),
    progress=st.none() | st.floats(0, 1),
    message=st.text(max_size=10),
    batch_id=st.none() | ids,
    meta=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    created_at=times,
    started_at=times,
    completed_at=times,
    updated_at=times,
    seq=st.integers(0, 2**70),
    owner=st.none() | st.text(max_size=10),
    owner_start=st.none() | st.integers(),
    owner_machine=st.none() | st.text(max_size=10),
    cancel_requested=st.booleans(),
    heartbeat_at=times,
)
# Values a hand-edited or foreign document may hold instead of the written one.
odd_values = json_values | st.sampled_from(
    [
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01T02:00:00+02:00",
        "2026-13-01T00:00:00+00:00",
        "pending",
        "completed",
        "../x",
        "CON",
        "x.",
        1,
        0,
        -1,
        1.5,
        1e999,
        True,
        {},
        [],
    ]
)


def _outcome(call: Callable[[], BatchJob]) -> BatchJob | str:
    """The job, or the reason it was refused (as decode_job words it)."""
    try:
        return call()
    except InvalidRecordError as exc:
        return exc.reason
    except (TypeError, ValueError) as exc:
        return str(exc)


def _both_paths(data: bytes, expected_id: str | None) -> tuple[BatchJob | str, BatchJob | str]:
    fast = _outcome(lambda: decode_job(data, expected_id=expected_id))
    general = _outcome(lambda: _checked_doc(_DECODER.decode(data.decode()), expected_id))
    return fast, general


@given(full_jobs)
@settings(max_examples=100, deadline=None)
@pytest.mark.slow
def test_written_documents_take_the_fast_path_and_decode_alike(job: BatchJob) -> None:
    data = encode_job(job)
    fast, general = _both_paths(data, job.id)
    assert fast == general == job
    # Everything statusbridge writes is in final form: the fast path must take it
    # (otherwise start-up silently falls back to the slow path), and msgspec's parse
    # too unless a string needed a \u escape (control characters).
    assert _well_formed_job(json.loads(data), job.id) == job
    assert _quick_job(data, job.id) == (None if b"\\u" in data else job)


@given(full_jobs)
@settings(max_examples=100, deadline=None)
@pytest.mark.slow
def test_compact_text_is_the_same_document(job: BatchJob) -> None:
    text = job_text(job)
    assert json.loads(text) == json.loads(encode_job(job))
    assert decode_job(text.encode(), expected_id=job.id) == job


def test_each_timestamp_is_written_as_its_own_text_while_objects_come_and_go() -> None:
    """The encoder keeps the text of lasting timestamps by object: a datetime made at the
    address of a dropped one must never be written as the dropped one's text."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(10_000):  # past the bound of what it keeps, too
        created = base + timedelta(microseconds=i)
        job = BatchJob("j", created_at=created, started_at=created + timedelta(hours=i))
        for text in (job_text(job), encode_job(job).decode()):
            doc = json.loads(text)
            assert doc["created_at"] == created.isoformat()
            assert doc["started_at"] == (created + timedelta(hours=i)).isoformat()


def test_compact_text_of_values_msgspec_does_not_take() -> None:
    for job in (
        # Lone surrogates:
        BatchJob("j", message="half \ud83d", meta={"k\udc00": "\udfff"}),  # type: ignore[arg-type]
        BatchJob("j", params={"big": 2**70, "neg": -(2**70)}),
    ):
        assert json.loads(job_text(job)) == json.loads(encode_job(job))
    assert "\ufffd" in job_text(BatchJob("j", message="half \ud83d"))


@given(
    full_jobs,
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(BatchStatus),
            "progress": st.none() | st.floats(0, 1),
            "meta": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
            "seq": st.integers(0, 10),
            "updated_at": times,
        },
    ),
)
@settings(max_examples=100, deadline=None)
@pytest.mark.slow
def test_replace_is_dataclasses_replace(job: BatchJob, changes: dict[str, Any]) -> None:
    expected = dict(changes)
    if "progress" in expected:
        expected["progress_known"] = expected["progress"] is not None
    assert job.replace(**changes) == dataclasses.replace(job, **expected)


def test_checked_job_sets_each_field_from_its_place() -> None:
    names = [f.name for f in dataclasses.fields(BatchJob)]
    values = [f"value of {name}" for name in names]
    job = checked_job(values)
    assert type(job) is BatchJob
    assert [getattr(job, name) for name in names] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.id = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="not enough values"):
        checked_job(values[:-1])


def test_replace_refuses_what_the_constructor_refuses() -> None:
    job = BatchJob("j")
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        job.replace(nope=1)
    with pytest.raises(ValueError, match="progress must be between"):
        job.replace(progress=2.0)
    with pytest.raises(ValueError, match="invalid job id"):
        job.replace(id="../x")


@given(st.lists(full_jobs, max_size=4, unique_by=lambda job: job.id), st.booleans())
@settings(max_examples=100, deadline=None)
@pytest.mark.slow
def test_documents_decoded_at_once_are_the_jobs(jobs: list[BatchJob], compact: bool) -> None:
    texts = [job_text(job) if compact else encode_job(job).decode() for job in jobs]
    decoded = decode_documents([job.id for job in jobs], texts)
    if decoded is None:  # what the written form may hold that the array path defers
        assert any("\\u" in text for text in texts) or any(
            t is not None and t.tzinfo is not UTC
            for job in jobs
            for t in (job.created_at, job.started_at, job.completed_at, job.updated_at)
        )
    else:
        assert decoded == jobs


def test_documents_decoded_at_once_refuse_what_is_not_a_written_document() -> None:
    job = BatchJob("j", BatchStatus.RUNNING, progress=0.5, created_at=datetime.now(UTC))
    good = job_text(job)
    assert decode_documents(["j"], [good]) == [job]
    assert decode_documents([], []) == []
    doc = json.loads(good)
    for bad in (
        good[:-1],  # cut
        json.dumps({**doc, "future_field": 1}),  # a key the array path does not know
        json.dumps({k: v for k, v in doc.items() if k != "owner"}),  # a key missing
        json.dumps({**doc, "progress_known": False}),
        json.dumps({**doc, "message": None}),
        json.dumps({**doc, "created_at": "2026-01-01T02:00:00+02:00"}),
        json.dumps({**doc, "params": json.loads("[" * 101 + "]" * 101)}),
    ):
        assert decode_documents(["j"], [bad]) is None
    assert decode_documents(["other"], [good]) is None
    assert decode_documents(["j"], [good.encode()]) is None  # type: ignore[list-item]


@given(full_jobs, st.sampled_from(("schema", *FIELD_NAMES)), odd_values, st.booleans())
@settings(max_examples=400, deadline=None)
@pytest.mark.slow
def test_fast_path_refuses_and_accepts_exactly_what_the_general_path_does(
    job: BatchJob, key: str, value: object, other_id: bool
) -> None:
    doc = json.loads(encode_job(job))
    doc[key] = value
    expected_id = "other" if other_id else job.id
    fast, general = _both_paths(json.dumps(doc).encode(), expected_id)
    assert fast == general
    # The array path (a database's load) takes a subset, into the same job.
    decoded = decode_documents([expected_id], [json.dumps(doc)])
    assert decoded is None or decoded == [general]


def test_fast_path_defers_on_other_shapes() -> None:
    job = BatchJob("j", BatchStatus.RUNNING, progress=0.5, created_at=datetime.now(UTC))
    doc = json.loads(encode_job(job))
    reordered = dict(reversed(doc.items()))
    extra = {**doc, "future_field": 1}
    missing = {k: v for k, v in doc.items() if k != "owner"}
    for variant in (reordered, extra, missing):
        assert _well_formed_job(dict(variant), "j") is None
        assert decode_job(json.dumps(variant).encode(), expected_id="j") == job
    # json reads 1e999 as infinity: refused alike (the written form never has it).
    huge = encode_job(job).replace(b'"progress": 0.5', b'"progress": 1e999')
    fast, general = _both_paths(huge, "j")
    assert fast == general
    assert isinstance(fast, str) and "progress must be between" in fast


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b'"seq": 1,', b'"seq": 1, "seq": 2,'),  # top level
        (b'"seq": 1,', b'"seq":1, "seq": 1,'),  # same value, other spacing
        (b'"message": ""', b'"message": "a:b", "message": ""'),  # the lost value has a colon
        (b'"meta": {}', b'"meta": {"k": 1, "k": 2}'),
        (b'"meta": {}', b'"meta": {"k": {"x": [1, {"y": ":", "y": 2}]}}'),  # deep inside
        (b'"params": null', b'"params": [{"a": "1:2", "a": "1:2"}]'),
        (b'"seq": 1,', b'"seq": 1, "\\u0073eq": 1,'),  # an escaped name
    ],
)
def test_duplicate_keys_are_refused_in_written_documents(before: bytes, after: bytes) -> None:
    """msgspec keeps the last of duplicate keys: the colon count must send these to the stdlib."""
    job = BatchJob("j", BatchStatus.COMPLETED, seq=1, created_at=datetime.now(UTC))
    data = encode_job(job)
    assert before in data
    assert _quick_job(data, "j") == job
    changed = data.replace(before, after)
    assert _quick_job(changed, "j") is None
    assert decode_documents(["j"], [data.decode()]) == [job]
    assert decode_documents(["i", "j"], [job_text(job.replace(id="i")), changed.decode()]) is None
    with pytest.raises(InvalidRecordError, match="duplicate key"):
        decode_job(changed, expected_id="j")
