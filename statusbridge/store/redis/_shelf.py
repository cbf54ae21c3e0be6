"""RedisShelf: batch definitions as ``{prefix}:batch:<name>`` strings on the status server."""

from __future__ import annotations

from statusbridge.store._location import RedisLocation
from statusbridge.store.redis._schema import REPLACE_IF_EQUAL, Keys, connect, translated

__all__ = ["RedisShelf"]


class RedisShelf:
    @classmethod
    def open(cls, where: RedisLocation, *, create: bool = True) -> RedisShelf:
        """The registered opener (nothing to create on a server)."""
        return cls(where)

    def __init__(self, where: RedisLocation) -> None:
        self.where = where
        self.label = str(where)
        self._prefix = Keys(where).batch_prefix
        self._client = connect(where)
        self._replace = self._client.register_script(REPLACE_IF_EQUAL)

    def get(self, name: str) -> bytes | None:
        value = translated(self.where, lambda: self._client.get(self._prefix + name))
        return value if isinstance(value, bytes) else None

    def size(self, name: str) -> int | None:
        key = self._prefix + name
        length = translated(self.where, lambda: self._client.strlen(key))
        # STRLEN answers 0 for a missing key; a stored definition is never empty.
        return int(length) or None

    def names(self) -> list[str]:
        def listing() -> list[str]:
            found = self._client.scan_iter(match=self._prefix + "*", count=500)
            return sorted(key.decode()[len(self._prefix) :] for key in found)

        return translated(self.where, listing)

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        done = translated(
            self.where, lambda: self._client.set(self._prefix + name, data, nx=exclusive)
        )
        if not done:
            raise FileExistsError(f"{self.label}: {name} exists")

    def replace(self, name: str, expected: bytes, data: bytes) -> bool:
        """One script, atomic on the server.

        Caveat: the client retries a command whose connection dropped; if the
        server ran the script and only its reply was lost, the retry finds
        ``data`` already there and answers False. The caller then refuses a
        change that was in fact made in its name: the safe side for a batch
        start (nothing runs twice), though that batch then needs a look.
        """
        done = translated(
            self.where,
            lambda: self._replace(keys=[self._prefix + name], args=[expected, data]),
        )
        return bool(done)

    def remove(self, name: str) -> None:
        translated(self.where, lambda: self._client.delete(self._prefix + name))

    def close(self) -> None:
        self._client.close()
