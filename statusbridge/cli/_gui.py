"""``statusbridge gui``: the Qt monitor window. Needs PySide6 and a display.

Qt aborts the whole process (no exception) when its platform plugin cannot
start — no X display, a display that does not answer, or system libraries
missing for the xcb plugin — so those are checked here first and reported as
one line. PySide6 is imported only when the command runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["run", "unavailable"]

# statusbridge is installed from a clone (not on PyPI): name what its qt extra installs.
INSTALL_HINT = "pip install 'PySide6-Essentials>=6.7,<6.12' (the statusbridge[qt] extra)"
XCB_PACKAGES = (
    "libegl1 libgl1 libfontconfig1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 "
    "libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1"
)


def unavailable() -> str | None:
    """Why the window cannot open here (one line), or None."""
    try:
        import PySide6
    except ImportError:
        return f"the gui needs PySide6, which is not installed: {INSTALL_HINT}"
    return _display_problem(Path(PySide6.__file__).parent)


def _display_problem(pyside: Path) -> str | None:
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0]
    if sys.platform in ("win32", "darwin") or platform not in ("", "xcb"):
        return None  # the platform's own windowing, or offscreen/wayland/vnc as asked
    display = os.environ.get("DISPLAY", "")
    if not display:
        if platform == "" and os.environ.get("WAYLAND_DISPLAY"):
            return None
        return (
            "no display to open a window on: DISPLAY is not set "
            "(run it in a desktop session, or under xvfb-run)"
        )
    plugin = pyside / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if plugin.exists():
        try:
            ctypes.CDLL(str(plugin))
        except OSError as exc:
            return (
                f"Qt's X11 (xcb) plugin cannot load: {exc}; on Debian/Ubuntu: "
                f"apt-get install {XCB_PACKAGES}"
            )
    return _x_server_problem(display)


def _x_server_problem(display: str) -> str | None:
    name = ctypes.util.find_library("xcb") or "libxcb.so.1"
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None  # let Qt try (and say why) on its own
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        if xcb.xcb_connection_has_error(connection):
            return f"cannot connect to the X display {display!r} (is the X server running?)"
    finally:
        xcb.xcb_disconnect(connection)
    return None


def run(location: str, batch_id: str | None, exit_after: float | None, out: TextIO) -> int:
    """Open the monitor for ``location`` and run until its window closes; print the summary."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from statusbridge.qt import JobMonitor, quit_on_ctrl_c
    from statusbridge.qt._interrupt import EXIT_INTERRUPTED

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication([sys.argv[0]])
    app.setApplicationName("statusbridge")
    monitor = JobMonitor(location, batch_id=batch_id)
    # The library's Ctrl-C handling (what any JobMonitor program gets), also where the
    # command was started with SIGINT handled or ignored by someone else: it is ours now.
    undo = quit_on_ctrl_c(force=True)
    if exit_after is not None:
        QTimer.singleShot(max(0, round(exit_after * 1000)), monitor.close)
    try:
        monitor.show()
        code = app.exec()
    finally:
        if undo is not None:
            undo()
        monitor.release()
    print(monitor.summary_label.text(), file=out)
    return 130 if code == EXIT_INTERRUPTED else 0
