"""Waiting on conditions, never fixed sleeps: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

import pytest

T = TypeVar("T")


def poll_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)  # a poll interval inside a condition wait, not a fixed sleep
        delay = min(delay * 2, 0.05)
    return True


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    Typed for ``lambda: (job := ...) and job.ready and job``: what it returns is never
    ``None`` or ``False``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(delay)  # a poll interval inside a condition wait, not a fixed sleep
        delay = min(delay * 2, 0.05)
