"""The text of values that repeat from one write of a job to the next, kept, not redone.

Every update writes the whole document, so the encoder asks for the same status and
the same ``created_at``/``started_at`` text again and again.
"""

from __future__ import annotations

from datetime import datetime

from statusbridge.record._model import BatchStatus

__all__ = ["STATUS_TEXT", "lasting_time"]

STATUS_TEXT = {status: status.value for status in BatchStatus}  # (.value is a slow property)
# The text of timestamps that stay the same from one write of a job to the next, by the
# datetime object itself: every update writes the whole document, and ``isoformat`` of
# ``created_at`` and ``started_at`` was a third of encoding it. ``updated_at`` is new at
# every write, so it would only churn this. Each entry holds its datetime, so an id seen
# here is never another object's.
_TIME_TEXT: dict[int, tuple[datetime, str]] = {}
_TIME_TEXT_MAX = 4096


def lasting_time(value: datetime) -> str:
    hit = _TIME_TEXT.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = value.isoformat()
    if len(_TIME_TEXT) >= _TIME_TEXT_MAX:
        _TIME_TEXT.clear()
    _TIME_TEXT[id(value)] = (value, text)
    return text
