"""The ``sqlite://`` backend's cache side: ``SqliteCache`` (see ``_cache``).

Imported only for a ``sqlite://`` location (the registry in ``store/_location.py``).
"""

from statusbridge.cache.sqlite._cache import SqliteCache

__all__ = ["SqliteCache"]
