"""The demo app served by ``streamlit run`` on a free port, and headless Chromium to look at it.

Shared by the browser tests (``tests/adapters/test_streamlit.py``, ``tests/system/``): one
way to start the server as the README does, and one set of Chromium flags.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "demo_app.py"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_CHROMIUM = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
NO_CHROMIUM = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def demo_server(
    tmp_path: Path, status_dir: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``streamlit run demo_app.py`` on a free port: (url, the process, its log).

    Folders: ``status_dir`` (default ``tmp_path/batch_status``) and ``tmp_path/batches``.
    """
    port = free_port()
    log = tmp_path / "streamlit.log"
    # Run as the README does, from the repository root: with the shipped config.
    shutil.copytree(ROOT / ".streamlit", tmp_path / ".streamlit", dirs_exist_ok=True)
    env = {**os.environ, "STATUSBRIDGE_DIR": str(status_dir or tmp_path / "batch_status"),
           "STATUSBRIDGE_BATCH_DIR": str(tmp_path / "batches")}  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, 60, "streamlit health endpoint")
        yield url, proc, log
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def chromium(profile: Path, width: int = 900, height: int = 1100) -> Iterator[Any]:
    """Headless Chromium (a Selenium driver) at ``width`` px, with the console kept; quit after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for Vega
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def server_log_problems(log: Path) -> list[str]:
    """Lines of a server log that are defects: warnings, tracebacks, deprecations, and
    Streamlit calls made outside a session (a worker touching Streamlit)."""
    bad = ("Traceback", "WARNING", "Warning", "ScriptRunContext", "deprecat")
    return [line for line in log.read_text().splitlines() if any(b in line for b in bad)]
