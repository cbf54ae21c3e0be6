"""statusbridge: status of background work, from any thread or process to a UI, safely.

Workers write one atomically replaced JSON file per job (``StatusStore``); a
watchdog observer keeps an immutable in-memory ``Snapshot`` current
(``StatusCache``), so a UI reads status with no disk I/O and no shared lock.

This namespace owns the public API: the names in ``__all__``, re-exported from the
layers (record, store, cache, jobs; errors below them all). The adapters
(``statusbridge.streamlit``, ``statusbridge.qt``, ``statusbridge.metrics``,
``statusbridge.display``) are imported on their own, so the core never loads a UI
toolkit; modules and names starting with ``_`` are private.
"""

from statusbridge.cache import (
    BatchSummary,
    CacheHealth,
    Snapshot,
    StatusCache,
    on_batch_finished,
    on_job_finished,
)
from statusbridge.errors import (
    BackendRefused,
    BackendUnavailable,
    InvalidRecordError,
    JobCancelled,
    LockTimeout,
    RecordVanished,
    StatusBridgeError,
    UnknownJobError,
    UnsafeFolderError,
)
from statusbridge.jobs import (
    BatchManager,
    BatchQueue,
    current_job_id,
    is_cancelled,
    report_progress,
)
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore

__version__ = "0.1.0"

__all__ = [
    "BackendRefused",
    "BackendUnavailable",
    "BatchJob",
    "BatchManager",
    "BatchQueue",
    "BatchStatus",
    "BatchSummary",
    "CacheHealth",
    "InvalidRecordError",
    "JobCancelled",
    "LockTimeout",
    "RecordVanished",
    "Snapshot",
    "StatusBridgeError",
    "StatusCache",
    "StatusStore",
    "UnknownJobError",
    "UnsafeFolderError",
    "__version__",
    "current_job_id",
    "is_cancelled",
    "on_batch_finished",
    "on_job_finished",
    "report_progress",
]
