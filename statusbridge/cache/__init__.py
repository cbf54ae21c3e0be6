"""Layer 3, the read side: ``StatusCache`` (a folder or a Redis server) and its ``Snapshot``."""

from statusbridge.cache._cache import CacheHealth, StatusCache, Subscriber
from statusbridge.cache._snapshot import BatchSummary, Snapshot, summarize
from statusbridge.cache._transitions import TransitionTracker, on_batch_finished, on_job_finished

__all__ = [
    "BatchSummary",
    "CacheHealth",
    "Snapshot",
    "StatusCache",
    "Subscriber",
    "TransitionTracker",
    "on_batch_finished",
    "on_job_finished",
    "summarize",
]
