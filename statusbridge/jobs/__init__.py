"""Layer 4, jobs: ``BatchQueue``, ``BatchManager`` and the in-job helpers.

``__all__`` is what the docs present; ``is_owner_alive``, which ``statusbridge
doctor`` shares with the queue, is imported by its private module path.
"""

from statusbridge.jobs._cancel import request_cancel
from statusbridge.jobs._context import current_job_id, is_cancelled, report_progress
from statusbridge.jobs._manager import BatchDefinition, BatchManager
from statusbridge.jobs._queue import BatchQueue, MaintenanceReport

__all__ = [
    "BatchDefinition",
    "BatchManager",
    "BatchQueue",
    "MaintenanceReport",
    "current_job_id",
    "is_cancelled",
    "report_progress",
    "request_cancel",
]
