"""Shelves: small named documents kept next to the status records (batch definitions).

A shelf is a folder (``<name>.json`` files, written atomically) or, for a URL
location, the backend's own place (keys ``{prefix}:batch:<name>`` on the same
Redis server, a table of the same SQLite database), so a ``BatchManager`` on a
URL creates nothing in the working directory. Each backend registers its shelf
(``store._location``).

``replace`` is a compare-and-swap: of several processes that read the same
document and each want to change it, exactly one succeeds (how a batch is
started once, whoever clicks "start").
"""

from __future__ import annotations

import os
from typing import Protocol

from statusbridge.store._location import Location, backend_for

__all__ = ["Shelf", "open_shelf"]


class Shelf(Protocol):
    """Where named documents live; every write is atomic."""

    label: str

    def get(self, name: str) -> bytes | None: ...
    def size(self, name: str) -> int | None:
        """The document's length in bytes (None: there is none), without reading it: a
        cheap look whether a document known here changed (every change of a batch
        definition makes it longer)."""
        ...

    def names(self) -> list[str]: ...
    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        """``exclusive``: FileExistsError if ``name`` exists (nothing written)."""
        ...

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        """Compare-and-swap: True if ``name`` held exactly ``expected`` and now holds
        ``data``; False, nothing written, if it held anything else or nothing."""
        ...

    def remove(self, name: str) -> None: ...
    def close(self) -> None:
        """Let go of descriptors or connections (reopened on next use)."""
        ...


def open_shelf(location: str | os.PathLike[str] | Location, *, create: bool = True) -> Shelf:
    """The shelf at ``location``: a folder (made if missing, with ``create``) or a URL."""
    backend, where = backend_for(location)
    opened: Shelf = backend.load("shelf")(where, create=create)
    return opened
