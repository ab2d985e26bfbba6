"""Headless Debian Chromium for the browser tests (Playwright downloads no browser here)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NEEDS_CHROMIUM = pytest.mark.needs(
    "Debian's chromium (for the widget's and the inbox's browser tests)",
    Path(CHROMIUM).exists(),
    "install it with `apt-get install chromium` (scripts/test.sh does, when run as root)",
)
expect.set_options(timeout=30_000)  # generous: a busy machine renders slowly; waits end on the signal
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()
