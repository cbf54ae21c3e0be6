"""Layer 3, the read side: ``StatusCache`` (a folder or a Redis server) and its ``Snapshot``.

``__all__`` is what the docs present; ``summarize`` and ``TransitionTracker``,
which the jobs and the adapters build on, are imported by their private module path.
"""

from statusbridge.cache._cache import StatusCache, Subscriber
from statusbridge.cache._health import CacheHealth
from statusbridge.cache._snapshot import BatchSummary, Snapshot
from statusbridge.cache._transitions import on_batch_finished, on_job_finished

__all__ = [
    "BatchSummary",
    "CacheHealth",
    "Snapshot",
    "StatusCache",
    "Subscriber",
    "on_batch_finished",
    "on_job_finished",
]
