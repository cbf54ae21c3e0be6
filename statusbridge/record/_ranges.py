"""Numeric options are checked where they are given, not where they first misbehave.

A NaN interval makes a timed wait return at once (a busy loop), a NaN limit
compares false with everything (so retention removes every record); both
surface far from the call that caused them. Every numeric constructor option
is checked against a ``NumberRange`` instead, with one message naming the
option and what it accepts.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["AT_LEAST_ONE", "POSITIVE", "NumberRange"]


@dataclass(frozen=True)
class NumberRange:
    """What one numeric option accepts.

    ``low``/``above``: the value must be >= ``low`` (> ``low`` with ``above``);
    ``integer``: an ``int``; ``infinite``: ``math.inf`` is accepted (it means
    "never"/"no limit" for that option); ``optional``: ``None`` is accepted.
    NaN and bools are always refused: a bool is a flag, not a number.
    """

    low: float = 0
    above: bool = False
    integer: bool = False
    infinite: bool = False
    optional: bool = False

    def describe(self) -> str:
        text = f"{'>' if self.above else '>='} {self.low:g}"
        if self.infinite:
            text += " or math.inf"
        if self.optional:
            text += " or None"
        return f"{text} ({'an int' if self.integer else 'a number'})"

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` if it is in range; else ``TypeError``/``ValueError`` naming ``name``."""
        if value is None and self.optional:
            return None
        wanted = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise TypeError(f"{name} must be {self.describe()}, not {type(value).__name__}")
        number = float(value)
        in_range = number > self.low if self.above else number >= self.low
        if not in_range or (math.isinf(number) and not self.infinite):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return value


# The two ranges most options share: a count of at least one, a positive interval.
AT_LEAST_ONE = NumberRange(low=1, integer=True)
POSITIVE = NumberRange(above=True)
