"""The console against real services: an in-process manager (SQLite file) and executor, the console on a
loopback port, real local sites, and Debian's Chromium driven by Playwright. Every response the browser
receives is kept, so a test can check that no secret reached any of them."""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from executor_service.render.browser import BROWSER_ARGS
from executor_service.render.chromium import BrowserMissing, chromium_path, playwright_missing
from quaero.testing.console import ConsoleServer, signed_in
from quaero.testing.harness import CrawlHarness, RunningManager
from tests.support.hosts import RESOLVE

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Stack:
    harness: CrawlHarness
    console: ConsoleServer

    @property
    def token(self) -> str:
        return self.harness.manager.token

    @property
    def url(self) -> str:
        return self.console.url


@pytest.fixture
def stack(sqlite_manager: RunningManager) -> Iterator[Stack]:
    harness = CrawlHarness(sqlite_manager, resolve=RESOLVE)
    console = ConsoleServer(sqlite_manager.address, harness.executor_address, sqlite_manager.token).start()
    yield Stack(harness, console)
    console.stop()
    harness.close()


def signed_in_client(stack: Stack) -> contextlib.AbstractContextManager[httpx.Client]:
    """An HTTP client with a signed-in session (for what a browser cannot be made to send)."""
    return signed_in(stack.url, stack.token, follow_redirects=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        binary = chromium_path()
        missing = playwright_missing()
    except BrowserMissing as error:
        binary, missing = "", str(error)
    if missing:
        if IN_CI:
            pytest.fail(f"CI needs the browser for the console's tests: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI, this machine) Chromium's own sandbox cannot start; the pages are our own.
        launched = playwright.chromium.launch(executable_path=binary, args=[*BROWSER_ARGS, "--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Visit:
    """A browser tab on the console that keeps every response body it received."""
    page: Any
    stack: Stack
    received_parts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> Any:
        return self.page.goto(self.stack.url + path)

    def sign_in(self) -> None:
        self.go("/login")
        self.page.get_by_label("Operator token").fill(self.stack.token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r".*/runs$"))

    def keep(self, request: Any) -> None:
        """On each finished request: its response's headers and body (events included, once a stream ends)."""
        response = request.response()
        if response is None:
            return
        self.received_parts.append(" ".join(f"{k}: {v}" for k, v in response.headers.items()))
        if not 300 <= response.status < 400:
            self.received_parts.append(response.body().decode("utf-8", "replace"))

    def received(self) -> str:
        return "\n".join(self.received_parts)


@pytest.fixture
def visit(browser: Any, stack: Stack) -> Iterator[Visit]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    visit = Visit(page, stack)

    page.on("requestfinished", visit.keep)
    page.on("pageerror", lambda error: visit.errors.append(str(error)))
    page.on("console", lambda message: visit.errors.append(message.text) if message.type == "error" else None)
    yield visit
    context.close()
