"""SqliteShelf: batch definitions as rows of ``batches`` in the status database."""

from __future__ import annotations

import sqlite3

from statusbridge.store._location import SqliteLocation
from statusbridge.store.sqlite._database import Database

__all__ = ["SqliteShelf"]


class SqliteShelf:
    """Batch definitions as rows of ``batches`` in the status database."""

    @classmethod
    def open(cls, where: SqliteLocation, *, create: bool = True) -> SqliteShelf:
        """The registered opener (the database is made at first use)."""
        return cls(where)

    def __init__(self, where: SqliteLocation, *, lock_timeout: float = 10.0) -> None:
        self.where = where
        self.label = where.url
        self._db = Database(where, timeout=lock_timeout)

    def get(self, name: str) -> bytes | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT doc FROM batches WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def size(self, name: str) -> int | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT length(doc) FROM batches WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def names(self) -> list[str]:
        with self._db.reading() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM batches ORDER BY name")]

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        with self._db.writing(f"batch {name!r}") as conn:
            if exclusive:
                try:
                    conn.execute("INSERT INTO batches(name, doc) VALUES (?, ?)", (name, data))
                except sqlite3.IntegrityError:
                    raise FileExistsError(f"{self.label}: {name} exists") from None
            else:
                conn.execute(
                    "INSERT INTO batches(name, doc) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                    (name, data),
                )

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        with self._db.writing(f"batch {name!r}") as conn:
            done = conn.execute(
                "UPDATE batches SET doc = ? WHERE name = ? AND doc = ?", (data, name, expected)
            ).rowcount
        return bool(done)

    def remove(self, name: str) -> None:
        with self._db.writing(f"batch {name!r}") as conn:
            conn.execute("DELETE FROM batches WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()
