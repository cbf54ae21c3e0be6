"""Reading a whole status database at once: what a cache starts from (one read transaction)."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from statusbridge.errors import InvalidRecordError
from statusbridge.record import BatchJob, decode_job
from statusbridge.record._documents import decode_documents

__all__ = ["collector_paused", "decode_row", "load", "newest_position"]

# Documents a load parses as one JSON array; a chunk with an invalid one is decoded one by one.
_LOAD_CHUNK = 1000


def decode_row(job_id: str, doc: str | bytes) -> BatchJob:
    """The job of a ``jobs.doc``; InvalidRecordError naming the job if invalid."""
    data = doc.encode() if isinstance(doc, str) else doc
    return decode_job(data, source=f"job {job_id}", expected_id=job_id)


def load(conn: sqlite3.Connection) -> tuple[int, dict[str, BatchJob | InvalidRecordError]]:
    """(change-log position, every record), in one read transaction of ``conn``."""
    with collector_paused():
        return _load(conn)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk load, then as it was.

    A load makes several objects per record and no cyclic garbage, and each of
    the collector's passes walks every object made so far: on large loads that
    repeated walking was a quarter to a third of the time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(conn: sqlite3.Connection) -> tuple[int, dict[str, BatchJob | InvalidRecordError]]:
    conn.execute("BEGIN")
    try:
        position = newest_position(conn)
        rows = conn.execute("SELECT id, doc FROM jobs").fetchall()
    finally:
        conn.execute("COMMIT")
    records: dict[str, BatchJob | InvalidRecordError] = {}
    for start in range(0, len(rows), _LOAD_CHUNK):
        chunk = rows[start : start + _LOAD_CHUNK]
        ids = [job_id for job_id, _doc in chunk]
        jobs = decode_documents(ids, [doc for _job_id, doc in chunk])
        if jobs is not None:
            records.update(zip(ids, jobs, strict=True))
            continue
        for job_id, doc in chunk:  # one by one: each invalid record with its reason
            try:
                records[job_id] = decode_row(job_id, doc)
            except InvalidRecordError as exc:
                records[job_id] = exc
    return position, records


def newest_position(conn: sqlite3.Connection) -> int:
    """The position of the change log's newest entry (0 if it has none)."""
    row = conn.execute("SELECT max(pos) FROM changes").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])
