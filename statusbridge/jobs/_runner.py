"""The code that runs one job, in whatever thread or process the executor picked.

Everything it needs travels in a picklable ``RunSpec``; the worker writes its
own status (``owner`` = its own host:pid), so a process pool needs no channel
back to the queue.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from statusbridge.errors import JobCancelled
from statusbridge.jobs._context import JobContext, activate, deactivate
from statusbridge.jobs._liveness import this_process
from statusbridge.record import BatchJob, BatchStatus, thaw, utc_now
from statusbridge.store import StatusStore

__all__ = ["TRACEBACK_LIMIT", "RunSpec", "run_job"]

logger = logging.getLogger(__name__)

TRACEBACK_LIMIT = 8000


@dataclass(frozen=True)
class RunSpec:
    folder: str
    job_id: str
    func: Callable[[Any], Any]
    progress_interval: float = 0.1
    heartbeat_interval: float = 5.0
    # The queue's own store, for jobs run in its process; not sent to worker
    # processes, which open one store per folder for their lifetime.
    store: StatusStore | None = field(default=None, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


_stores: dict[str, StatusStore] = {}
_stores_lock = threading.Lock()


def _store_for(folder: str) -> StatusStore:
    """One store per folder per process: lock descriptors are opened once, not per job."""
    with _stores_lock:
        store = _stores.get(folder)
        if store is None:
            store = _stores[folder] = StatusStore(folder)
        return store


class _Heartbeats:
    """One thread per process writes a heartbeat for every running job that has been quiet."""

    def __init__(self) -> None:
        self._jobs: weakref.WeakSet[JobContext] = weakref.WeakSet()
        self._intervals: dict[int, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, ctx: JobContext, interval: float) -> None:
        with self._lock:
            self._jobs.add(ctx)
            self._intervals[id(ctx)] = interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="statusbridge-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, ctx: JobContext) -> None:
        with self._lock:
            self._jobs.discard(ctx)
            self._intervals.pop(id(ctx), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                jobs = [(ctx, self._intervals.get(id(ctx), 5.0)) for ctx in self._jobs]
            if not jobs:
                with self._lock:
                    if not self._jobs:
                        self._thread = None
                        return
            now = time.monotonic()
            for ctx, interval in jobs:
                if now - ctx.last_write >= interval:
                    try:
                        ctx.flush()
                    except Exception:
                        logger.exception("heartbeat for job %s failed", ctx.job_id)
            wait = min((interval for _, interval in jobs), default=1.0)
            self._wake.wait(min(wait / 2, 1.0))


_heartbeats = _Heartbeats()


def run_job(spec: RunSpec) -> str:
    """Run one job to its end and write its final status; returns that status' value."""
    store = spec.store if spec.store is not None else _store_for(spec.folder)
    me = this_process()

    def start(current: BatchJob | None) -> dict[str, Any] | None:
        if current is None or current.status is not BatchStatus.PENDING:
            return None
        if current.cancel_requested:
            return {"status": BatchStatus.CANCELLED, "message": "cancelled before it started"}
        return {
            "status": BatchStatus.RUNNING,
            **me.fields(),
            "heartbeat_at": utc_now(),
        }

    job = store.modify(spec.job_id, start)
    if job is None or job.status is not BatchStatus.RUNNING:
        return job.status.value if job else "skipped"

    ctx = JobContext(store, spec.job_id, interval=spec.progress_interval)
    token = activate(ctx)
    _heartbeats.add(ctx, spec.heartbeat_interval)
    final: dict[str, Any]
    try:
        result = spec.func(thaw(job.params))
        final = {"status": BatchStatus.COMPLETED, "result": result, "progress": 1.0}
    except JobCancelled:
        final = {"status": BatchStatus.CANCELLED}
    except Exception as exc:  # noqa: BLE001 - any error of user code fails the job, with its traceback
        tb = traceback.format_exc()
        final = {
            "status": BatchStatus.FAILED,
            "error_message": f"{type(exc).__name__}: {exc}",
            "meta": {"traceback": tb[-TRACEBACK_LIMIT:]},
        }
    finally:
        _heartbeats.remove(ctx)
        deactivate(ctx, token)
    return _finish(store, ctx, final)


def _finish(store: StatusStore, ctx: JobContext, final: dict[str, Any]) -> str:
    with ctx.write_lock:  # no heartbeat may land after this
        ctx.finished = True
        return _write_final(store, ctx, final)


def _write_final(store: StatusStore, ctx: JobContext, final: dict[str, Any]) -> str:
    fields = ctx.take_pending()
    meta = {**fields.pop("meta", {}), **final.pop("meta", {})}
    fields.update(final)
    if meta:
        fields["meta"] = meta
    fields["heartbeat_at"] = utc_now()
    try:
        store.update(ctx.job_id, **fields)
    except (TypeError, ValueError) as exc:
        # The result (or a meta value) cannot be stored: the job fails, saying why.
        logger.warning("job %s: cannot store its outcome: %s", ctx.job_id, exc)
        store.update(
            ctx.job_id,
            status=BatchStatus.FAILED,
            error_message=f"job returned a result that cannot be stored: {exc}",
            heartbeat_at=utc_now(),
        )
        return BatchStatus.FAILED.value
    return str(fields["status"].value)
