"""``close()`` and the context manager for an object whose ``shutdown(wait=True)`` releases it."""

from __future__ import annotations

from typing import Protocol, Self

__all__ = ["ShutsDown"]


class _CanShutDown(Protocol):
    def shutdown(self, wait: bool = ...) -> None: ...


class ShutsDown:
    """``close()`` and ``with`` both mean ``shutdown(wait=True)`` (the queue's and manager's)."""

    def close(self: _CanShutDown) -> None:
        """``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self: _CanShutDown, *exc: object) -> None:
        self.shutdown(wait=True)
