"""The DESIGN.md invariants, checked from outside with real processes and random histories."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from statusbridge import InvalidRecordError, StatusCache, StatusStore

from support.resources import temp_files
from support.waiting import wait_until
from support.workers import write_forever


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_no_torn_reads_when_writers_are_killed(status_dir: Path, tmp_path: Path) -> None:
    """Invariant 1: every *.json is complete, also when a writer dies mid-write."""
    ctx = mp.get_context("spawn")
    job_ids = [f"job-{i}" for i in range(4)]
    rng = random.Random(1234)
    reads = 0
    for round_ in range(4):
        ready = tmp_path / f"ready-{round_}"
        writer = ctx.Process(target=write_forever, args=(str(status_dir), job_ids, str(ready)))
        writer.start()
        wait_until(ready.exists, 60, "writer ready")
        # Read until a random moment (the kill), but at least until this round has seen the
        # writer replace records while it read them: however slow the machine, every round
        # reads during writes, not merely before or after them.
        deadline = time.monotonic() + rng.uniform(0.2, 0.6)
        versions: set[tuple[str, int]] = set()  # (file, seq) read this round
        while time.monotonic() < deadline or len(versions) < 3 * len(job_ids):
            if time.monotonic() > deadline + 60:
                pytest.fail(f"the writer replaced no records for 60 s: read {sorted(versions)}")
            for name in os.listdir(status_dir):
                if name.endswith(".json") and not name.startswith("."):
                    try:
                        data = (status_dir / name).read_bytes()
                    except FileNotFoundError:
                        continue
                    versions.add((name, json.loads(data)["seq"]))  # raises on a torn read
                    reads += 1
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(30)
        assert writer.exitcode == -signal.SIGKILL
        for name in os.listdir(status_dir):
            if name.endswith(".json") and not name.startswith("."):
                json.loads((status_dir / name).read_bytes())
    assert reads >= 4 * 3 * len(job_ids)  # the reader ran (at least as above, every round)
    store = StatusStore(status_dir)
    assert set(store.scan()) == set(job_ids)  # every record still valid after the kills
    leftovers = temp_files(status_dir)
    assert len(leftovers) <= 4  # at most one per kill, and removed once stale:
    store.remove_stale_temp_files(max_age=0)  # type: ignore[attr-defined]
    assert not temp_files(status_dir)
    with StatusCache(status_dir) as cache:
        assert dict(cache.snapshot()) == store.scan()


class CacheConverges(RuleBasedStateMachine):
    """Invariant 3: after any history of writes, deletes, garbage and folder removal,
    once quiet, the cache equals a fresh scan (plus last-good values of files now invalid)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="sb-state-"))
        self.folder = self.root / "status"
        self.store = StatusStore(self.folder)
        self.cache = StatusCache(self.folder, reconcile_interval=5.0)
        self.folder_exists = True

    ids = st.sampled_from(["a", "b", "c", "d"])

    @precondition(lambda self: self.folder_exists)
    @rule(job_id=ids, progress=st.floats(0, 1), batch=st.sampled_from([None, "b1", "b2"]))
    def update(self, job_id: str, progress: float, batch: str | None) -> None:
        try:
            self.store.update(job_id, progress=progress, batch_id=batch)
        except InvalidRecordError:
            (self.folder / f"{job_id}.json").unlink()  # garbage there: replace it
            self.store.update(job_id, progress=progress, batch_id=batch)

    @precondition(lambda self: self.folder_exists)
    @rule(job_id=ids)
    def delete(self, job_id: str) -> None:
        self.store.delete(job_id)

    @precondition(lambda self: self.folder_exists)
    @rule(job_id=ids, garbage=st.sampled_from([b"", b"{", b"[1]", b"\xff", b'{"schema":5}']))
    def garbage(self, job_id: str, garbage: bytes) -> None:
        (self.folder / f"{job_id}.json").write_bytes(garbage)

    @precondition(lambda self: self.folder_exists)
    @rule()
    def foreign(self) -> None:
        (self.folder / "README.txt").write_text("hi")

    @precondition(lambda self: self.folder_exists)
    @rule()
    def remove_folder(self) -> None:
        shutil.rmtree(self.folder)
        self.folder_exists = False

    @precondition(lambda self: not self.folder_exists)
    @rule()
    def recreate_folder(self) -> None:
        self.folder.mkdir()
        self.folder_exists = True

    def converged(self) -> bool:
        truth = self.store.scan()
        snap = self.cache.snapshot()
        invalid = self.cache.health().invalid_files
        for job_id, job in truth.items():
            if snap.get(job_id) != job:
                return False
        for job_id in snap:
            if job_id not in truth and f"{job_id}.json" not in invalid:
                return False
        return (
            all(
                (self.folder / name).exists() or (self.folder / name).is_symlink()
                for name in invalid
            )
            if self.folder_exists
            else not invalid
        )

    def teardown(self) -> None:
        try:
            wait_until(self.converged, 15, "cache to converge with a fresh scan")
        finally:
            self.cache.close()
            self.store.close()
            shutil.rmtree(self.root, ignore_errors=True)


CacheConverges.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cache_converges = CacheConverges.TestCase
