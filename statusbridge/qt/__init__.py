"""Qt adapter (PySide6, the ``qt`` extra): a table model and a monitor window.

The only package that imports Qt. Workers never touch a widget: the cache's
subscription hands each change to the GUI thread through a queued signal, and
the model applies it there, at most 30 times a second:

    from PySide6.QtWidgets import QApplication
    from statusbridge.qt import JobMonitor

    app = QApplication([])
    monitor = JobMonitor("batch_status")   # table, progress bars, batch filter, cancel
    monitor.show()
    app.exec()                             # closing the window (or Ctrl-C) releases the cache

Use ``JobTableModel(cache, batch_id=None)`` with your own views.
"""

try:
    import PySide6  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "statusbridge.qt needs PySide6: pip install -e '.[qt]' in the statusbridge clone"
    ) from exc

from statusbridge.qt._interrupt import quit_on_ctrl_c
from statusbridge.qt._model import Column, JobTableModel, on_gui_thread
from statusbridge.qt._monitor import JobMonitor, ProgressDelegate

__all__ = [
    "Column",
    "JobMonitor",
    "JobTableModel",
    "ProgressDelegate",
    "on_gui_thread",
    "quit_on_ctrl_c",
]
