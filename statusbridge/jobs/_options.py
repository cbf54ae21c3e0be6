"""The numeric options of ``BatchQueue`` (``BatchManager`` passes them on), checked up front.

``BatchManager`` checks them before it looks for an engine to share: a bool
hashes like an int, so ``max_concurrent=True`` would otherwise be handed the
engine of ``max_concurrent=1`` unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from statusbridge.record._ranges import NumberRange

__all__ = ["QUEUE_OPTION_RANGES", "check_queue_options"]

# 0 and math.inf are accepted only where they mean something (see BatchQueue's docstring).
QUEUE_OPTION_RANGES: Mapping[str, NumberRange] = {
    "max_concurrent": NumberRange(low=1, integer=True),
    "max_completed_jobs": NumberRange(integer=True),
    "progress_interval": NumberRange(),
    "heartbeat_interval": NumberRange(above=True),
    "heartbeat_timeout": NumberRange(above=True, infinite=True, optional=True),
    "retention_hours": NumberRange(optional=True),
    "maintenance_interval": NumberRange(above=True),
    "pending_timeout": NumberRange(above=True, infinite=True),
    "record_delay": NumberRange(infinite=True),
}


def check_queue_options(options: Mapping[str, Any]) -> None:
    """Raise ``TypeError``/``ValueError`` for the first numeric option out of its range."""
    for name, allowed in QUEUE_OPTION_RANGES.items():
        if name in options:
            allowed.check(name, options[name])
    interval = options.get("heartbeat_interval")
    timeout = options.get("heartbeat_timeout")
    if interval is not None and timeout is not None and timeout <= interval:
        # Every running job would look dead between two of its heartbeats.
        raise ValueError(
            f"heartbeat_timeout must be greater than heartbeat_interval, "
            f"got {timeout!r} <= {interval!r}"
        )
