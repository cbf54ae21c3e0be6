"""What this machine offers the tests: its watchdog backend, and root to drop to nobody."""

from __future__ import annotations

import os
import pickle
import traceback
import warnings
from collections.abc import Callable
from typing import TypeVar

import pytest

from statusbridge.cache._watcher import native_backend

T = TypeVar("T")

NATIVE_BACKEND = native_backend()
"""The watchdog backend of this platform: tests of live events expect it, not a name."""

needs_inotify = pytest.mark.skipif(
    NATIVE_BACKEND != "inotify",
    reason=f"tests inotify itself; this platform's watchdog backend is {NATIVE_BACKEND}",
)


NOBODY = 65534


def run_as_nobody(func: Callable[[], T]) -> T:
    """Run ``func`` in a forked child that dropped root to uid/gid nobody; return its result.

    Tests run as root here, and root ignores permission bits. The child is forked,
    not spawned: nobody may not be able to read this interpreter's files, so
    whatever ``func`` needs should be imported before (run it once as root first).
    """
    if not hasattr(os, "fork") or os.geteuid() != 0:
        pytest.skip("needs root (to drop privileges to nobody in a child process)")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                payload: tuple[bool, object] = (True, func())
            except BaseException as exc:
                payload = (False, "".join(traceback.format_exception(exc)))
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(payload, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        pytest.fail(f"as nobody, in the child:\n{value}")
    return value  # type: ignore[no-any-return]
