"""The executor a queue runs jobs on, replaced when a worker process dies.

Lock order, and why it matters: from CPython 3.12 on, a process pool runs the
done-callbacks of its futures while holding its own internal lock. A callback
that takes a lock which another thread holds around ``executor.submit`` (which
takes the pool's lock) deadlocks the two. So the only lock here, ``_lock``, is
never taken by a done-callback: callbacks only post to a queue that the
queue's supervisor thread drains (see ``BatchQueue``).

A broken pool is recognised by what it raised (``BrokenExecutor`` from
``submit`` or in a future), never by reading the pool's private state.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from multiprocessing import get_context
from multiprocessing.connection import wait as wait_for_sentinels
from multiprocessing.process import BaseProcess
from typing import Any, Literal

__all__ = ["BrokenExecutor", "WorkerPool", "describe_exit"]

logger = logging.getLogger(__name__)

ExecutorChoice = Literal["thread", "process"] | Executor


def describe_exit(exitcode: int | None) -> str:
    """``exit code 3`` / ``killed by signal SIGKILL`` / ``exit code unknown``."""
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _leave_ctrl_c_to_parent() -> None:
    """A worker's initializer: Ctrl-C in a terminal reaches the whole process group, and the
    parent decides what happens to the jobs; a worker that raised KeyboardInterrupt in the
    pool's own queue read would print a traceback and break the pool instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_worker(import_path: list[str]) -> None:
    """A worker's initializer: Ctrl-C is the parent's, and the parent's import path holds.

    A spawned worker starts with the parent's ``sys.path`` of the moment it is
    spawned; workers spawned later (a batch fed in the background, a replaced
    pool) also find the modules that were importable when the jobs were submitted
    (a Streamlit script's folder is on the path only while the script runs).
    """
    _leave_ctrl_c_to_parent()
    sys.path.extend(p for p in import_path if p not in sys.path)


class WorkerPool:
    """An owned thread or process pool (replaceable), or an executor the user gave us."""

    def __init__(self, choice: ExecutorChoice, max_workers: int) -> None:
        if not (choice in ("thread", "process") or isinstance(choice, Executor)):
            raise ValueError(
                f"executor must be 'thread', 'process' or a concurrent.futures.Executor, "
                f"not {choice!r}"
            )
        self._choice = choice
        self._max_workers = max_workers
        self.owned = not isinstance(choice, Executor)
        # Functions and specs cross a process boundary unless the pool is threads.
        self.pickles = choice == "process" or (
            isinstance(choice, Executor) and not isinstance(choice, ThreadPoolExecutor)
        )
        self._lock = threading.Lock()
        # Import path entries seen at submit time, for workers spawned later (pickled
        # with each worker's start: the list is read when a worker spawns).
        self._import_path: list[str] = []
        self._executor = self._new_executor()
        self._closed = False
        # Worker processes we have seen, by pid, with the pool they belong to:
        # their Process objects tell the exit code after they die.
        self._workers: dict[int, tuple[BaseProcess, Executor]] = {}
        # The exit codes of a broken pool's workers, kept while anyone holds that pool:
        # each of its failed jobs asks, and every one must hear its own worker's code.
        self._exits: weakref.WeakKeyDictionary[Executor, dict[int, int | None]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def executor(self) -> Executor:
        return self._executor

    def _new_executor(self) -> Executor:
        if self._choice == "thread":
            return ThreadPoolExecutor(self._max_workers, thread_name_prefix="statusbridge-job")
        if self._choice == "process":
            # spawn, not fork: forking a process that runs threads (the cache, the
            # observer) can deadlock the child on a lock held at fork time.
            return ProcessPoolExecutor(
                self._max_workers,
                mp_context=get_context("spawn"),
                initializer=_start_worker,
                initargs=(self._import_path,),
            )
        assert isinstance(self._choice, Executor)
        return self._choice

    def note_import_path(self) -> None:
        """Remember the caller's ``sys.path`` for the worker processes spawned from now on."""
        if self._choice == "process":
            with self._lock:
                self._import_path.extend(p for p in sys.path if p not in self._import_path)

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Future[Any], Executor]:
        """Submit to the current executor (replacing it once if it is broken)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool was shut down")
            executor = self._executor
            if self._choice == "process" and self._lost_a_worker(executor):
                # Broken, and its own thread may be handling that right now, iterating its
                # workers: a submit that started a replacement worker meanwhile killed that
                # thread ("dictionary changed size during iteration", CPython's pool).
                self._replace_locked(executor)
                executor = self._executor
            try:
                future = executor.submit(fn, *args)
            except (BrokenExecutor, OSError) as exc:
                # A worker died and the supervisor has not replaced the pool yet. A
                # process pool that breaks *during* submit() raises OSError ("handle
                # is closed"): its manager thread closed the wake-up pipe between
                # submit's broken check and its write (CPython bpo-39995).
                if isinstance(exc, OSError) and self._choice != "process":
                    raise
                if not self._replace_locked(executor):
                    raise
                executor = self._executor
                future = executor.submit(fn, *args)
            if self._choice == "process":
                self._note_workers(executor)
            return future, executor

    def _lost_a_worker(self, executor: Executor) -> bool:
        """Whether a worker of ``executor`` has exited (its workers only end when it breaks)."""
        return any(p.exitcode is not None for p, ex in self._workers.values() if ex is executor)

    def _note_workers(self, executor: Executor) -> None:
        # A process pool starts its workers inside submit(); whatever child is new
        # now is one of them. active_children() also reaps exited children.
        for child in multiprocessing.active_children():
            if child.pid is not None and child.pid not in self._workers:
                self._workers[child.pid] = (child, executor)

    def replace(self, broken: Executor) -> bool:
        """Swap in a fresh pool if ``broken`` is still the current one.

        True if ``broken`` is not the current pool any more, replaced now or by an
        earlier call (each job of a broken pool asks); False if it cannot be
        (not ours, or shut down).
        """
        with self._lock:
            return self._replace_locked(broken)

    def _replace_locked(self, broken: Executor) -> bool:
        if not self.owned or self._closed:
            return False
        if self._executor is not broken:
            return True  # replaced already
        self._executor = self._new_executor()
        logger.warning("statusbridge: a worker process died; replaced its pool")
        # Outside of any callback. Its queued futures are not cancelled: a pool whose
        # worker died fails them (BrokenExecutor) once its own thread notices, and their
        # jobs then run again on the new pool; a cancelled future reads as a user's
        # cancel (a submit that replaced the pool first once ended ten jobs CANCELLED).
        broken.shutdown(wait=False)
        return True

    def exit_codes(self, broken: Executor, timeout: float = 10.0) -> dict[int, int | None]:
        """Wait (bounded) until every worker of ``broken`` has exited; their exit codes by pid.

        The pool fails its futures *before* it terminates its other workers, so a
        record may still change until they are gone. Every call for one pool
        returns all its workers' codes, also those an earlier call collected.
        """
        with self._lock:
            workers = [p for p, ex in self._workers.values() if ex is broken]
        deadline = time.monotonic() + timeout
        alive = [p for p in workers if p.exitcode is None]
        while alive and (remaining := deadline - time.monotonic()) > 0:
            wait_for_sentinels([p.sentinel for p in alive], timeout=remaining)
            # The pool's own thread reaps them; exitcode is set once it (or we) did.
            alive = [p for p in alive if p.exitcode is None]
            if alive:
                time.sleep(0.01)  # reaping in progress on the pool's thread
        if alive:
            # A worker the pool started while it was breaking (a submit racing the
            # break) escapes the pool's own terminate, and the pool's thread then
            # joins it forever: interpreter exit would hang on that thread.
            logger.warning(
                "statusbridge: worker process(es) %s of a broken pool still running after %gs;"
                " killing them",
                ", ".join(str(p.pid) for p in alive),
                timeout,
            )
            for process in alive:
                process.kill()
            wait_for_sentinels([p.sentinel for p in alive], timeout=timeout)
        codes = {p.pid: p.exitcode for p in workers if p.pid is not None}
        with self._lock:
            for pid in codes:
                self._workers.pop(pid, None)
            known = self._exits.setdefault(broken, {})
            known.update(codes)
            return dict(known)

    def kill_workers(self) -> list[int]:
        """Kill this pool's worker processes that are still running; their pids.

        For a server that is going away: their jobs then end as when a worker dies.
        """
        with self._lock:
            alive = [p for p, _ in self._workers.values() if p.exitcode is None]
        for process in alive:
            process.kill()
        wait_for_sentinels([p.sentinel for p in alive], timeout=10)
        return [p.pid for p in alive if p.pid is not None]

    def join_workers(self, timeout: float) -> None:
        """After ``shutdown``: wait (bounded) until its worker processes have exited, then kill
        any that have not. A pool shut down without waiting stops them from its own thread."""
        with self._lock:
            alive = [p for p, _ in self._workers.values() if p.exitcode is None]
        if alive:
            wait_for_sentinels([p.sentinel for p in alive], timeout=timeout)
        if any(p.exitcode is None for p in alive):
            self.kill_workers()

    def shutdown(self, *, wait: bool, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            executor = self._executor
        if self.owned:
            executor.shutdown(wait=wait, cancel_futures=cancel_futures)
