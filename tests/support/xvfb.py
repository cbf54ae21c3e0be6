"""A private X server for tests that open real windows; skip without one (fail where CI=true)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

SCREEN = "1280x800x24"


def need(available: object, reason: str) -> None:
    """Skip the module when ``available`` is falsy; with CI=true, fail instead: CI must have it."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """Start ``Xvfb`` on a free display number (it picks one: -displayfd); yield ':N'."""
    binary = shutil.which("Xvfb")
    need(binary, "Xvfb is not installed (apt-get install xvfb)")
    assert binary is not None
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [binary, "-displayfd", str(write_end), "-screen", "0", SCREEN, "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 30
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail(f"Xvfb did not start (exit code {proc.poll()})", pytrace=False)
            ready, _, _ = select.select([read_end], [], [], left)  # a condition wait
            if ready:
                chunk = os.read(read_end, 16)
                if not chunk:
                    pytest.fail("Xvfb closed -displayfd without a display number", pytrace=False)
                number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read_end)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def qt_application() -> Iterator[object]:
    """A QApplication on the xcb platform of a private Xvfb server, shut down at the end.

    For a module's ``qapp`` fixture (overriding pytest-qt's): real windows, nothing on the
    user's display. PySide6 is imported here, so a module without Qt never loads it.
    """
    from PySide6.QtWidgets import QApplication

    with xvfb() as display:
        env = pytest.MonkeyPatch()
        env.setenv("DISPLAY", display)
        env.setenv("QT_QPA_PLATFORM", "xcb")
        env.delenv("WAYLAND_DISPLAY", raising=False)
        existing = QApplication.instance()
        app = existing if isinstance(existing, QApplication) else QApplication(["sb-tests"])
        try:
            yield app
        finally:
            for widget in app.topLevelWidgets():
                widget.close()
            app.processEvents()
            app.shutdown()  # before the X server goes: Qt exits when its display dies
            env.undo()
