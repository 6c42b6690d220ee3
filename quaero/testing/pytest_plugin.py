"""pytest fixtures for testing against Quaero (loaded by pytest through the `pytest11` entry point):

    quaero_manager      a manager in this process on SQLite in tmp_path
                        (--quaero-database-url, or QUAERO_TEST_DATABASE_URL, for PostgreSQL)
    quaero_harness      an executor beside it, with helpers to define, run and inspect crawls
    quaero_site         a factory of local HTTP sites: quaero_site({("app.test", "/"): html("Home")})

Example:

    def test_my_crawl(quaero_harness, quaero_site):
        site = quaero_site({("app.test", "/"): html("Home")})
        outcome = quaero_harness.crawl([f"http://app.test:{site.port}/"])
        assert [d.title for d in outcome.documents] == ["Home"]

Host names in tests resolve through the `quaero_resolve` fixture (override it to add yours; by
default *.test names resolve to 127.0.0.1 when listed there).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quaero-database-url", default="",
                     help="database for the quaero_manager fixture (default: SQLite in tmp_path)")


@pytest.fixture
def quaero_resolve() -> dict[str, str]:
    """Host name -> address for the executor (QUAERO_RESOLVE); override to add the names your tests use."""
    return {"app.test": "127.0.0.1", "other.test": "127.0.0.1"}


@pytest.fixture
def quaero_manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from .harness import start_manager

    url = request.config.getoption("--quaero-database-url") or os.environ.get("QUAERO_TEST_DATABASE_URL") or None
    running = start_manager(tmp_path / "quaero", url)
    yield running
    running.close()


@pytest.fixture
def quaero_harness(quaero_manager: Any, quaero_resolve: dict[str, str]) -> Iterator[Any]:
    from .harness import CrawlHarness

    harness = CrawlHarness(quaero_manager, resolve=quaero_resolve)
    yield harness
    harness.close()


@pytest.fixture
def quaero_site() -> Iterator[Callable[..., Any]]:
    from .site import Routes, SiteServer

    sites: list[SiteServer] = []

    def make(routes: dict[tuple[str, str], Any], host: str = "127.0.0.1") -> SiteServer:
        site = SiteServer(Routes(routes), host=host).start()
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()
