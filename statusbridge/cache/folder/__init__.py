"""The folder backend's cache side: ``FolderCache`` (file-system events, see ``_cache``).

Registered in ``store/_location.py``.
"""

from statusbridge.cache.folder._cache import FolderCache

__all__ = ["FolderCache"]
