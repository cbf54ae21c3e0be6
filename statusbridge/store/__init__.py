"""Layer 2, the write side: ``StatusStore`` (a folder or a Redis server), the file conventions."""

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
from statusbridge.store._folder import FolderStore
from statusbridge.store._location import (
    RedisLocation,
    absolute_location,
    is_url,
    location_text,
    parse_location,
)
from statusbridge.store._locks import STRIPES
from statusbridge.store._shelf import Shelf, open_shelf
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
    "absolute_location",
    "TEMP_DIR",
    "UPDATABLE_FIELDS",
    "FileSignature",
    "FolderStore",
    "RedisLocation",
    "ScanReport",
    "Shelf",
    "StatusStore",
    "TempSweep",
    "classify_name",
    "is_url",
    "location_text",
    "open_shelf",
    "parse_location",
    "read_record_file",
    "select_expired",
    "sweep_temp_files",
    "unreadable_reason",
    "write_atomic",
]
