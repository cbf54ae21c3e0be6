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
)
from statusbridge.store._locks import STRIPES
from statusbridge.store._store import (
    UPDATABLE_FIELDS,
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
    "StatusStore",
    "TempSweep",
    "classify_name",
    "read_record_file",
    "select_expired",
    "sweep_temp_files",
    "write_atomic",
]
