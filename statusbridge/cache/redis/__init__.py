"""The ``redis://`` backend's cache side: ``RedisCache`` (initial load + change stream).

Imported only for a ``redis://`` location (the registry in ``store/_location.py``).
"""

from statusbridge.cache.redis._cache import RedisCache

__all__ = ["RedisCache"]
