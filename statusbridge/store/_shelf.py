"""Shelves: small named documents kept next to the status records (batch definitions).

A shelf is a folder (``<name>.json`` files, written atomically) or, for a URL
location, keys ``{prefix}:batch:<name>`` on the same Redis server, so a
``BatchManager`` on a URL creates nothing in the working directory.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from statusbridge.store._atomic import write_atomic
from statusbridge.store._location import RedisLocation, parse_location

__all__ = ["FolderShelf", "Shelf", "open_shelf"]


class Shelf(Protocol):
    """Where named documents live; every write is atomic."""

    label: str

    def get(self, name: str) -> bytes | None: ...
    def names(self) -> list[str]: ...
    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        """``exclusive``: FileExistsError if ``name`` exists (nothing written)."""
        ...

    def remove(self, name: str) -> None: ...


class FolderShelf:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.label = str(folder)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.folder / f"{name}.json").read_bytes()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in entries if n.endswith(".json"))

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        write_atomic(self.folder / f"{name}.json", data, exclusive=exclusive)

    def remove(self, name: str) -> None:
        with suppress(FileNotFoundError):
            (self.folder / f"{name}.json").unlink()


def open_shelf(location: str | os.PathLike[str], *, create: bool = True) -> Shelf:
    """The shelf at ``location``: a folder (made if missing, with ``create``) or a URL."""
    where = parse_location(location)
    if isinstance(where, RedisLocation):
        from statusbridge.store._redis_shelf import RedisShelf

        return RedisShelf(where)
    if create:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
    return FolderShelf(where)
