"""Deep-frozen JSON values, so a BatchJob handed to a UI cannot be changed behind its back."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

__all__ = ["MAX_NESTING", "FrozenMap", "JsonValue", "freeze", "thaw"]

# How deeply lists and objects may nest inside one field (params, result, meta),
# the field's own value counting as level 1. Enforced by ``freeze``, so on write
# (a clear ValueError before anything is written) and on read (the decoder
# builds every BatchJob through it) alike; far below what would exhaust Python's
# recursion limit in freeze, thaw or json, wherever in a call stack they run.
MAX_NESTING = 100

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

    __slots__ = ("_data", "_hash", "_height")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        frozen: dict[str, Any] = {}
        if data:
            for key, value in data.items():
                if not isinstance(key, str):
                    raise TypeError(f"keys must be strings, not {type(key).__name__} ({key!r})")
                frozen[key] = freeze(value, _path=key, _depth=1)
        self._data = frozen
        self._hash: int | None = None
        self._height: int | None = None

    @classmethod
    def _trusted(cls, data: dict[str, Any]) -> FrozenMap:
        """Wrap a dict whose values are already frozen (decoder fast path)."""
        obj = cls.__new__(cls)
        obj._data = data
        obj._hash = None
        obj._height = None
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


def freeze(value: Any, *, _path: str = "value", _depth: int = 0) -> Any:
    """Return ``value`` as a frozen JSON value, or raise TypeError/ValueError naming the path.

    Lists and objects may nest ``MAX_NESTING`` levels deep, no more.

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
        if _depth and _depth + _height(value) > MAX_NESTING:
            raise _too_deep(_path)
        return value
    if isinstance(value, Mapping):
        _depth += 1
        if _depth > MAX_NESTING:
            raise _too_deep(_path)
        if not value:
            return EMPTY  # shared: most records have empty meta, and fewer objects = less GC work
        frozen: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{_path}: JSON object keys must be strings, not {type(key).__name__} ({key!r})"
                )
            frozen[key] = freeze(item, _path=f"{_path}.{key}", _depth=_depth)
        return FrozenMap._trusted(frozen)
    if isinstance(value, (list, tuple)):
        _depth += 1
        if _depth > MAX_NESTING:
            raise _too_deep(_path)
        return tuple(
            freeze(item, _path=f"{_path}[{i}]", _depth=_depth) for i, item in enumerate(value)
        )
    raise TypeError(
        f"{_path}: {type(value).__name__} is not JSON-serialisable "
        "(use None, bool, int, float, str, list, tuple or dict with str keys)"
    )


def _too_deep(path: str) -> ValueError:
    if len(path) > 120:  # a path 100 levels deep is long; its two ends say where
        path = f"{path[:60]}...{path[-50:]}"
    return ValueError(
        f"{path}: lists and objects nest more than {MAX_NESTING} levels deep "
        "(statusbridge.record.MAX_NESTING); flatten the value"
    )


def _height(value: Any) -> int:
    """Nesting levels of a frozen value (a FrozenMap remembers its own: it never changes)."""
    if isinstance(value, FrozenMap):
        if value._height is None:
            value._height = 1 + max(map(_height, value._data.values()), default=0)
        return value._height
    if isinstance(value, tuple):
        return 1 + max(map(_height, value), default=0)
    return 0


def thaw(value: Any) -> Any:
    """Turn a frozen value back into plain dicts and lists (for JSON encoding or editing)."""
    if isinstance(value, FrozenMap):
        return {key: thaw(item) for key, item in value._data.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value
