"""Deep-frozen JSON values, so a BatchJob handed to a UI cannot be changed behind its back."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

__all__ = ["FrozenMap", "JsonValue", "freeze", "thaw"]

JsonValue: TypeAlias = "bool | int | float | str | tuple[JsonValue, ...] | FrozenMap | None"


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping with string keys and frozen JSON values.

    >>> m = FrozenMap({"a": [1, 2]})
    >>> m["a"]
    (1, 2)
    >>> m["b"] = 1
    Traceback (most recent call last):
    ...
    TypeError: 'FrozenMap' object does not support item assignment
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        frozen: dict[str, Any] = {}
        if data:
            for key, value in data.items():
                if not isinstance(key, str):
                    raise TypeError(f"keys must be strings, not {type(key).__name__} ({key!r})")
                frozen[key] = freeze(value, _path=key)
        self._data = frozen
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, data: dict[str, Any]) -> FrozenMap:
        """Wrap a dict whose values are already frozen (decoder fast path)."""
        obj = cls.__new__(cls)
        obj._data = data
        obj._hash = None
        return obj

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (thaw(self),))


EMPTY = FrozenMap()


def freeze(value: Any, *, _path: str = "value") -> Any:
    """Return ``value`` as a frozen JSON value, or raise TypeError/ValueError naming the path.

    >>> freeze({"x": [1, {"y": 2}]})
    FrozenMap({'x': (1, FrozenMap({'y': 2}))})
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_path}: {value!r} is not valid JSON (NaN and Infinity are refused)")
        return value
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        if not value:
            return EMPTY  # shared: most records have empty meta, and fewer objects = less GC work
        frozen: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{_path}: JSON object keys must be strings, not {type(key).__name__} ({key!r})"
                )
            frozen[key] = freeze(item, _path=f"{_path}.{key}")
        return FrozenMap._trusted(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item, _path=f"{_path}[{i}]") for i, item in enumerate(value))
    raise TypeError(
        f"{_path}: {type(value).__name__} is not JSON-serialisable "
        "(use None, bool, int, float, str, list, tuple or dict with str keys)"
    )


def thaw(value: Any) -> Any:
    """Turn a frozen value back into plain dicts and lists (for JSON encoding or editing)."""
    if isinstance(value, FrozenMap):
        return {key: thaw(item) for key, item in value._data.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value
