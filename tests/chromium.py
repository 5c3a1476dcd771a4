"""Debian's Chromium, for the tests that drive a real browser with Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
MISSING = f"no Chromium at {CHROMIUM}: `./course test` installs it with apt-get"
HAVE_CHROMIUM = Path(CHROMIUM).exists()


@contextmanager
def launched() -> Iterator:
    """A headless Chromium (Playwright's sync API), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()
