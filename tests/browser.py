"""Headless chromium (Debian's chromium and chromium-driver packages) for the browser tests;
nothing downloads a browser. CNNKIT_REQUIRE_BROWSER=1 (CI) turns a missing one into a failure
instead of a skip. Screenshots go to test-artifacts/ at the repository root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and os.environ.get("CNNKIT_REQUIRE_BROWSER") != "1",
    reason="Debian's chromium and chromium-driver are not installed",
)


def browser(width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
