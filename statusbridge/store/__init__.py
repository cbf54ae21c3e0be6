"""Layer 2, the write side: ``StatusStore`` and the folder's file conventions."""

from statusbridge.store._atomic import write_atomic
from statusbridge.store._files import (
    DEFAULT_MAX_BYTES,
    STALE_TEMP_SECONDS,
    TEMP_DIR,
    FileSignature,
    TempSweep,
    classify_name,
    read_record_file,
    sweep_temp_files,
    unreadable_reason,
)
from statusbridge.store._locks import STRIPES
from statusbridge.store._store import (
    UPDATABLE_FIELDS,
    ScanReport,
    StatusStore,
    select_expired,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "STALE_TEMP_SECONDS",
    "STRIPES",
    "TEMP_DIR",
    "UPDATABLE_FIELDS",
    "FileSignature",
    "ScanReport",
    "StatusStore",
    "TempSweep",
    "classify_name",
    "read_record_file",
    "select_expired",
    "sweep_temp_files",
    "unreadable_reason",
    "write_atomic",
]
