"""How much of a bar (or of 100%) a progress fills: rounded down, full only when done."""

from __future__ import annotations

import math

__all__ = ["floor_share"]


def floor_share(progress: float, steps: int) -> int:
    """How many of ``steps`` cells a bar fills: rounded down, all only at 1.0.

    Rounding to nearest draws 95% as a full bar, which reads as "done". The
    product is rounded to nine places before the floor: ``0.29 * 100`` is just
    below 29 in binary floating point, and a job that reported 29% must show 29%.

    Examples:
        >>> [floor_share(p, 10) for p in (0.0, 0.05, 0.3, 0.95, 0.9999, 1.0)]
        [0, 0, 3, 9, 9, 10]
    """
    cells = math.floor(round(progress * steps, 9))
    if progress < 1.0:
        cells = min(cells, steps - 1)
    return min(steps, max(0, cells))
