"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver, via Selenium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver import ChromeOptions
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
"""Skip without a browser, except where ``CI`` is set: there a missing one fails the test."""


def chrome_options(profile: Path, *extra: str) -> ChromeOptions:
    """Options for a quiet headless Chromium with its own profile folder (no network of its own)."""
    from selenium import webdriver

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
        *extra,
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    return options


def start_chrome(options: ChromeOptions) -> WebDriver:
    """A WebDriver session on Debian's chromedriver; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
