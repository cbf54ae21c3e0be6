"""statusbridge in a Qt desktop app: the ready monitor window, and the model in a view of your own.

Run ``python examples/qt_monitor.py [FOLDER]`` beside anything that writes the
folder (``statusbridge simulate --jobs 20``). Needs ``pip install -e '.[qt]'``.
"""

import sys

from PySide6.QtWidgets import QApplication, QTableView

from statusbridge import StatusCache
from statusbridge.qt import JobMonitor, JobTableModel

app = QApplication(sys.argv)
folder = sys.argv[1] if len(sys.argv) > 1 else "batch_status"

# 1. The ready window: progress bars, state colours, elapsed/ETA, batch filter, cancel.
monitor = JobMonitor(folder)  # opens its own cache; closing the window releases it
monitor.show()

# 2. Or the model in your own views. Workers never touch it: each change is handed to
#    the GUI thread by a queued signal, at most 30 refreshes a second, one row at a time.
cache = StatusCache(folder)
model = JobTableModel(cache, batch_id=None)  # or one batch
table = QTableView()
table.setModel(model)
table.setWindowTitle(f"{folder}: a view of my own")
table.show()

app.aboutToQuit.connect(model.close)  # unsubscribes; the cache is yours to close
app.aboutToQuit.connect(cache.close)
app.exec()
