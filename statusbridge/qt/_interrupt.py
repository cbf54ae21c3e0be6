"""Ctrl-C ends a Qt program that shows statusbridge jobs, quietly.

Qt's event loop runs no Python while it is idle, so Python's SIGINT handler
(``KeyboardInterrupt``) runs only at the next Python slot: the traceback then
comes out of whatever slot ran (``_deliver``, ``tick``), the slot is cut short
and the window stays open. ``quit_on_ctrl_c`` replaces Python's default handler
with one that ends the event loop (``QCoreApplication.exit(130)``: ``app.exec()``
returns 130, the shell's code for an interrupted program) and keeps a short
timer running so that the handler runs within a fraction of a second.

``JobTableModel`` (and so ``JobMonitor``) installs it when it is created on the
main thread, unless the program set a SIGINT handler of its own (or ignores
SIGINT, as ``nohup`` does): ``python examples/qt_monitor.py`` stops on Ctrl-C
with nothing more to write. Outside a running event loop a Ctrl-C still raises
``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from PySide6.QtCore import QCoreApplication, QThread, QTimer

__all__ = ["EXIT_INTERRUPTED", "quit_on_ctrl_c"]

EXIT_INTERRUPTED = 130
PULSE_MS = 200  # how late, at most, the handler runs while the loop is idle

_pulse: QTimer | None = None


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    app = QCoreApplication.instance()
    if app is None or QThread.currentThread().loopLevel() == 0:
        signal.default_int_handler(signum, frame)  # no loop to end: KeyboardInterrupt
        return
    app.exit(EXIT_INTERRUPTED)


def quit_on_ctrl_c(*, force: bool = False) -> Callable[[], None] | None:
    """Make Ctrl-C (SIGINT) end the running Qt event loop; returns a function that undoes it.

    Call it on the main thread with a ``QCoreApplication`` made. Without ``force``
    it does nothing (and returns None) when SIGINT already has a handler other
    than Python's default one: the program's own, or ``SIG_IGN``.
    """
    global _pulse  # noqa: PLW0603 - one timer per process, on the main thread
    app = QCoreApplication.instance()
    if app is None or threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGINT)
    if current is _on_sigint:
        return None
    if not force and current is not signal.default_int_handler:
        return None
    previous = signal.signal(signal.SIGINT, _on_sigint)
    pulse = _pulse
    if pulse is None or not _alive(pulse, app):
        pulse = _pulse = QTimer(app)
        pulse.timeout.connect(_nothing)  # a Python slot: lets the interpreter see the signal
    pulse.start(PULSE_MS)

    def undo() -> None:
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, previous)
        if _alive(pulse, app):
            pulse.stop()

    return undo


def _alive(timer: QTimer | None, app: QCoreApplication) -> bool:
    """True if ``timer`` still exists (its application may have been shut down) and is ``app``'s."""
    if timer is None:
        return False
    try:
        return timer.parent() is app
    except RuntimeError:  # "Internal C++ object already deleted"
        return False


def _nothing() -> None:
    pass
