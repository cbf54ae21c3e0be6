"""The folder backend's store side: ``FolderStore`` and ``FolderShelf``.

One locked, atomically replaced JSON file per job (``_store``, ``_atomic``,
``_locks``). Registered in ``store/_location.py``.
"""

from statusbridge.store.folder._shelf import FolderShelf
from statusbridge.store.folder._store import FolderStore

__all__ = ["FolderShelf", "FolderStore"]
