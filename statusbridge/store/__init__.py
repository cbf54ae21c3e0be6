"""Layer 2, the write side: ``StatusStore`` and the folder's file conventions."""

from statusbridge.store._atomic import write_atomic
from statusbridge.store._files import (
    DEFAULT_MAX_BYTES,
    FileSignature,
    classify_name,
    read_record_file,
)
from statusbridge.store._locks import STRIPES
from statusbridge.store._store import (
    STALE_TEMP_SECONDS,
    TEMP_DIR,
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
    "classify_name",
    "read_record_file",
    "select_expired",
    "write_atomic",
]
