"""The ``sqlite://`` backend's store side: ``SqliteStore`` and ``SqliteShelf`` (see ``_store``).

Imported only for a ``sqlite://`` location (the registry in ``store/_location.py``).
"""

from statusbridge.store.sqlite._database import open_database
from statusbridge.store.sqlite._load import decode_row, load
from statusbridge.store.sqlite._shelf import SqliteShelf
from statusbridge.store.sqlite._store import DEFAULT_LOG_KEEP, SqliteStore

__all__ = ["DEFAULT_LOG_KEEP", "SqliteShelf", "SqliteStore", "decode_row", "load", "open_database"]
