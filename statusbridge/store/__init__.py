"""Layer 2, the write side: ``StatusStore`` (a folder or a Redis server), the file conventions.

``__all__`` is what the docs present. The file helpers the cache, the jobs and
the command line share with the store (``write_atomic``, ``classify_name``,
``sweep_temp_files``, ``parse_location``, ``open_shelf``, ...) are imported by
their private module path.
"""

from statusbridge.store._files import DEFAULT_MAX_BYTES, TEMP_DIR
from statusbridge.store._store import UPDATABLE_FIELDS, ScanReport, StatusStore

__all__ = [
    "DEFAULT_MAX_BYTES",
    "TEMP_DIR",
    "UPDATABLE_FIELDS",
    "ScanReport",
    "StatusStore",
]
