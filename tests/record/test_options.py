"""Numeric options are refused at construction, with the option and its range in the message.

Each bad value here was once accepted and misbehaved later: a NaN or 0 interval
spun an idle queue at full CPU, ``max_completed_jobs=nan`` deleted every
finished record, ``retention_hours=nan`` failed at the first maintenance pass.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchManager, BatchQueue, StatusCache, StatusStore
from statusbridge.record._ranges import NumberRange

NAN, INF = math.nan, math.inf

# option, bad value, error type, text the message must contain
QUEUE_BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("max_concurrent", 0, ValueError, "max_concurrent must be >= 1 (an int), got 0"),
    ("max_concurrent", 2.5, TypeError, "max_concurrent must be >= 1 (an int), not float"),
    ("max_concurrent", True, TypeError, "max_concurrent must be >= 1 (an int), not bool"),
    ("max_completed_jobs", -1, ValueError, "max_completed_jobs must be >= 0 (an int), got -1"),
    ("max_completed_jobs", NAN, TypeError, "max_completed_jobs must be >= 0 (an int), not float"),
    ("max_completed_jobs", INF, TypeError, "max_completed_jobs must be >= 0 (an int), not float"),
    ("progress_interval", -0.1, ValueError, "progress_interval must be >= 0 (a number), got -0.1"),
    ("progress_interval", NAN, ValueError, "progress_interval must be >= 0 (a number), got nan"),
    ("progress_interval", INF, ValueError, "progress_interval must be >= 0 (a number), got inf"),
    ("progress_interval", "0.1", TypeError, "progress_interval must be >= 0 (a number), not str"),
    ("heartbeat_interval", 0, ValueError, "heartbeat_interval must be > 0 (a number), got 0"),
    ("heartbeat_interval", -5, ValueError, "heartbeat_interval must be > 0 (a number), got -5"),
    ("heartbeat_interval", NAN, ValueError, "heartbeat_interval must be > 0 (a number), got nan"),
    ("heartbeat_interval", INF, ValueError, "heartbeat_interval must be > 0 (a number), got inf"),
    ("heartbeat_timeout", -1, ValueError, "heartbeat_timeout must be > 0 or math.inf or None"),
    ("heartbeat_timeout", 0, ValueError, "heartbeat_timeout must be > 0 or math.inf or None"),
    ("heartbeat_timeout", NAN, ValueError, "heartbeat_timeout must be > 0 or math.inf or None"),
    ("heartbeat_timeout", 5.0, ValueError, "heartbeat_timeout must be greater than heartbeat_int"),
    ("retention_hours", -1, ValueError, "retention_hours must be >= 0 or None (a number), got -1"),
    ("retention_hours", NAN, ValueError, "retention_hours must be >= 0 or None (a number), got"),
    ("retention_hours", INF, ValueError, "retention_hours must be >= 0 or None (a number), got"),
    ("maintenance_interval", 0, ValueError, "maintenance_interval must be > 0 (a number), got 0"),
    ("maintenance_interval", -1, ValueError, "maintenance_interval must be > 0 (a number)"),
    ("maintenance_interval", NAN, ValueError, "maintenance_interval must be > 0 (a number)"),
    ("pending_timeout", -1, ValueError, "pending_timeout must be > 0 or math.inf (a number)"),
    ("pending_timeout", 0, ValueError, "pending_timeout must be > 0 or math.inf (a number)"),
    ("pending_timeout", NAN, ValueError, "pending_timeout must be > 0 or math.inf (a number)"),
    ("record_delay", -1, ValueError, "record_delay must be >= 0 or math.inf (a number), got -1"),
    ("record_delay", NAN, ValueError, "record_delay must be >= 0 or math.inf (a number), got nan"),
    ("record_delay", None, TypeError, "record_delay must be >= 0 or math.inf (a number)"),
]


def _case_id(case: tuple[str, Any, type[Exception], str]) -> str:
    return f"{case[0]}={case[1]!r}"


@pytest.mark.parametrize("case", QUEUE_BAD, ids=_case_id)
def test_a_bad_queue_option_is_refused_with_its_range(
    tmp_path: Path, case: tuple[str, Any, type[Exception], str]
) -> None:
    name, value, error, text = case
    with pytest.raises(error, match=f"^{re.escape(text)}"):
        BatchQueue(status_dir=tmp_path, **{name: value})
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


@pytest.mark.parametrize("case", QUEUE_BAD, ids=_case_id)
def test_a_bad_manager_option_is_refused_with_its_range(
    tmp_path: Path, case: tuple[str, Any, type[Exception], str]
) -> None:
    """Also when an engine with an equal key (``True == 1``) is already open."""
    name, value, error, text = case
    options = {"batch_dir": tmp_path / "b", "status_dir": tmp_path / "s"}
    with (
        BatchManager(**options, max_concurrent=1),  # type: ignore[arg-type]
        pytest.raises(error, match=f"^{re.escape(text)}"),
    ):
        BatchManager(**options, **{name: value})  # type: ignore[arg-type]


QUEUE_GOOD: list[dict[str, Any]] = [
    {"max_concurrent": 1, "max_completed_jobs": 0},
    {"retention_hours": 0, "progress_interval": 0, "record_delay": 0},
    {"retention_hours": None, "record_delay": INF, "pending_timeout": INF},
    {"heartbeat_timeout": INF, "heartbeat_interval": 0.5, "maintenance_interval": 0.5},
]


@pytest.mark.parametrize("options", QUEUE_GOOD, ids=lambda o: ",".join(sorted(o)))
def test_edge_values_that_mean_something_are_accepted(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    with BatchQueue(status_dir=tmp_path, **options) as queue:
        job_id = queue.submit(lambda params: params, 7)
        assert queue.wait([job_id], timeout=30)
        job = queue.get_job_status(job_id)
        assert job is not None and job.result == 7


STORE_BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("max_bytes", 0, ValueError, "max_bytes must be >= 1 (an int), got 0"),
    ("max_bytes", 1.5e6, TypeError, "max_bytes must be >= 1 (an int), not float"),
    ("lock_timeout", -1, ValueError, "lock_timeout must be >= 0 or math.inf (a number), got -1"),
    ("lock_timeout", NAN, ValueError, "lock_timeout must be >= 0 or math.inf (a number), got nan"),
    ("lock_timeout", False, TypeError, "lock_timeout must be >= 0 or math.inf (a number), not b"),
]
REDIS_ONLY_BAD = [
    ("stream_maxlen", 0, ValueError, "stream_maxlen must be >= 1 (an int), got 0"),
]
CACHE_BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("reconcile_interval", 0, ValueError, "reconcile_interval must be > 0 (a number), got 0"),
    ("reconcile_interval", NAN, ValueError, "reconcile_interval must be > 0 (a number), got nan"),
    ("reconcile_interval", INF, ValueError, "reconcile_interval must be > 0 (a number), got inf"),
]
FOLDER_CACHE_ONLY_BAD = [
    ("poll_interval", 0, ValueError, "poll_interval must be > 0 (a number), got 0"),
    ("poll_interval", NAN, ValueError, "poll_interval must be > 0 (a number), got nan"),
    ("max_bytes", -1, ValueError, "max_bytes must be >= 1 (an int), got -1"),
]
# Checked before any connection: the port needs no server.
UNUSED_URL = "redis://127.0.0.1:1/0?prefix=options"


Case = tuple[str, Any, type[Exception], str]
# (backend, case): the Redis-only option is not offered to a folder, and the folder-only
# cache options mean nothing on Redis (accepted and ignored there, as documented).
STORE_CASES = [("folder", c) for c in STORE_BAD] + [
    ("redis", c) for c in STORE_BAD + REDIS_ONLY_BAD
]
CACHE_CASES = [("folder", c) for c in CACHE_BAD + FOLDER_CACHE_ONLY_BAD] + [
    ("redis", c) for c in CACHE_BAD
]


def _backend_case_id(backend_case: tuple[str, Case]) -> str:
    return f"{backend_case[0]}-{_case_id(backend_case[1])}"


def _location(backend: str, tmp_path: Path) -> str:
    return str(tmp_path) if backend == "folder" else UNUSED_URL


@pytest.mark.parametrize("backend_case", STORE_CASES, ids=_backend_case_id)
def test_a_bad_store_option_is_refused(tmp_path: Path, backend_case: tuple[str, Case]) -> None:
    backend, (name, value, error, text) = backend_case
    with pytest.raises(error, match=f"^{re.escape(text)}"):
        StatusStore(_location(backend, tmp_path), **{name: value})


@pytest.mark.parametrize("backend_case", CACHE_CASES, ids=_backend_case_id)
def test_a_bad_cache_option_is_refused(tmp_path: Path, backend_case: tuple[str, Case]) -> None:
    backend, (name, value, error, text) = backend_case
    with pytest.raises(error, match=f"^{re.escape(text)}"):
        StatusCache(_location(backend, tmp_path), **{name: value})


@pytest.mark.parametrize(
    ("max_age_hours", "max_completed", "text"),
    [
        (NAN, None, "max_age_hours must be >= 0 or None (a number), got nan"),
        (None, -1, "max_completed must be >= 0 or None (an int), got -1"),
        (None, 2.5, "max_completed must be >= 0 or None (an int), not float"),
    ],
)
def test_cleanup_refuses_bad_limits(
    tmp_path: Path, max_age_hours: float | None, max_completed: Any, text: str
) -> None:
    with StatusStore(tmp_path) as store:
        store.update("done", status="completed")
        with pytest.raises((ValueError, TypeError), match=f"^{re.escape(text)}"):
            store.cleanup(max_age_hours, max_completed)
        assert store.read("done") is not None


def test_number_range_accepts_its_edges() -> None:
    assert NumberRange().check("x", 0) == 0
    assert NumberRange(above=True, infinite=True).check("x", INF) == INF
    assert NumberRange(integer=True, optional=True).check("x", None) is None
    with pytest.raises(ValueError, match=r"^x must be > 0 \(a number\), got 0$"):
        NumberRange(above=True).check("x", 0)
