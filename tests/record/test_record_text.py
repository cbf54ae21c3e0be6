"""Valid JSON that UTF-8 cannot carry as it is: a lone surrogate escape, a byte order mark.

One bad string used to break every view: the cache accepted it, then `ls`, `cancel --batch`,
`update()` on that job and the demo's table all raised UnicodeEncodeError.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from statusbridge import StatusCache, StatusStore
from statusbridge.record import decode_job, encode_job

from support.waiting import wait_until

# What JSON.stringify writes for a string cut in the middle of an emoji.
CUT_EMOJI = b'{"schema": 1, "id": "cut", "status": "running", "message": "done \\ud83d",'
CUT_EMOJI += b' "batch_id": "b", "meta": {"note\\udc00": ["\\ud83d\\ude00", "x\\udfff"]}}'


def test_a_lone_surrogate_is_read_as_the_replacement_character() -> None:
    job = decode_job(CUT_EMOJI)
    assert job.message == "done \ufffd"
    assert dict(job.meta) == {"note\ufffd": ("\U0001f600", "x\ufffd")}  # a pair stays an emoji
    assert json.loads(encode_job(job))["message"] == "done \ufffd"


def test_a_lone_surrogate_given_to_a_write_is_stored_as_the_replacement_character(
    store: StatusStore, status_dir: Path
) -> None:
    store.update("w", message="half \ud83d", meta={"k": "\udc00"})
    job = store.read("w")
    assert job is not None and job.message == "half \ufffd" and job.meta["k"] == "\ufffd"
    raw = (status_dir / "w.json").read_bytes()
    raw.decode("utf-8")  # the file is UTF-8, as the format promises


def test_what_a_store_remembers_and_hands_its_cache_is_what_it_stored(location: str) -> None:
    """A lone surrogate is replaced on the way to the store (a Redis client refused it
    before): the store's own later read (which may skip decoding) and its write-through
    cache show the replacement, as a fresh reader does."""
    with StatusStore(location) as store, StatusCache(location) as cache:
        cache.write_through(store)
        store.update("w", message="half \ud83d", meta={"k": "\udc00"})
        store.modify("w", lambda current: {"meta": {"k2\udc00": "x\ud83d"}})
        store.create_absent({"n": {"message": "new \udfff"}})
        job, new = store.read("w"), store.read("n")
        assert job is not None and new is not None
        assert job.message == "half \ufffd" and new.message == "new \ufffd"
        assert dict(job.meta) == {"k": "\ufffd", "k2\ufffd": "x\ufffd"}
        with StatusStore(location) as fresh:
            assert fresh.read("w") == job and fresh.read("n") == new
        seen = wait_until(lambda: cache.get("n") and cache.get("w"), 30, "the records in the cache")
        assert seen == job


def test_a_byte_order_mark_is_skipped() -> None:
    job = decode_job(b'\xef\xbb\xbf{"schema": 1, "id": "bom", "status": "completed"}')
    assert job.id == "bom" and job.status.value == "completed"


@pytest.mark.slow  # runs the CLI in subprocesses
def test_every_view_and_write_works_with_such_a_record(
    status_dir: Path, store: StatusStore
) -> None:
    (status_dir / "cut.json").write_bytes(CUT_EMOJI)
    with StatusCache(status_dir) as cache:
        seen = wait_until(lambda: cache.get("cut"), 30, "the record in the cache")
        assert seen.message == "done \ufffd"
        assert cache.health().invalid_files == {}
    assert store.update("cut", progress=0.5).message == "done \ufffd"  # raised before
    for args in (["ls"], ["ls", "--batch", "b"], ["show", "cut"], ["cancel", "--batch", "b"]):
        done = subprocess.run(
            [sys.executable, "-m", "statusbridge", *args, "--dir", str(status_dir)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
