"""The ``redis://`` backend's store side: ``RedisStore`` and ``RedisShelf``.

Imported only for a ``redis://`` location (the registry in ``store/_location.py``):
this package is the only place that imports redis-py.
"""

from statusbridge.store.redis._shelf import RedisShelf
from statusbridge.store.redis._store import RedisStore

__all__ = ["RedisShelf", "RedisStore"]
