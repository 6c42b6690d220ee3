"""Browser tests need Debian's Chromium and Playwright. Locally they skip, naming the install command,
when either is missing; with CI=true they fail instead (`python3 build.py test` installs both)."""
from __future__ import annotations

import os

import pytest

from executor_service.render.chromium import BrowserMissing, chromium_path, playwright_missing


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    try:
        chromium_path()
        missing = playwright_missing()
    except BrowserMissing as error:
        missing = str(error)
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs the browser for these tests: {missing}")
        pytest.skip(missing)
