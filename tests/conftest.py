"""Fixtures only: PostgreSQL, each database, in-process managers and crawl harnesses (from quaero.testing)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from manager_service.storage.clock import ManualClock
from quaero.testing.harness import CrawlHarness, RunningManager, start_manager
from quaero.testing.tls import make_certificate, server_context
from tests.support.cli import Cli
from tests.support.hosts import RESOLVE

PG_ADMIN_URL = os.environ.get("QUAERO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOKEN = "test-token-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = "quaero_t_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: tests that need PostgreSQL fail instead of skipping)")
        pytest.skip(message)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN_URL.rsplit("/", 1)[0]
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def admin_url(postgres_url: str) -> str:
    """The PostgreSQL server's maintenance database (to see and drop the test database's connections)."""
    return postgres_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/test"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'quaero.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def manager(database_url: str, tmp_path: Path) -> Iterator[RunningManager]:
    running = start_manager(tmp_path / "data", database_url, TOKEN)
    yield running
    running.close()


@pytest.fixture
def clocked_manager(database_url: str, tmp_path: Path) -> Iterator[RunningManager]:
    """A manager whose clock the test moves (`clocked_manager.server.stores.clock.advance(seconds)`)."""
    running = start_manager(tmp_path / "data", database_url, TOKEN, clock=ManualClock())
    yield running
    running.close()


@pytest.fixture
def sqlite_manager(tmp_path: Path) -> Iterator[RunningManager]:
    running = start_manager(tmp_path / "data", token=TOKEN)
    yield running
    running.close()


@pytest.fixture
def harness(sqlite_manager: RunningManager) -> Iterator[CrawlHarness]:
    running = CrawlHarness(sqlite_manager, resolve=RESOLVE)
    yield running
    running.close()


@pytest.fixture
def db_harness(manager: RunningManager) -> Iterator[CrawlHarness]:
    """A crawl harness on each database (SQLite and PostgreSQL)."""
    running = CrawlHarness(manager, resolve=RESOLVE)
    yield running
    running.close()


@pytest.fixture
def tls_harness(sqlite_manager: RunningManager, tmp_path: Path) -> Iterator[CrawlHarness]:
    """A crawl harness whose executor trusts a certificate for the test hosts; `tls_context` serves it."""
    cert, key = make_certificate(tmp_path, ["app.site.test", "sub.app.site.test"])
    running = CrawlHarness(sqlite_manager, resolve=RESOLVE, ca_bundle=str(cert))
    running.tls_context = server_context(cert, key)  # type: ignore[attr-defined]
    yield running
    running.close()


@pytest.fixture
def cli(harness: CrawlHarness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The `quaero` command line, in this process, pointed at `harness`'s services."""
    return Cli(harness, monkeypatch, capsys)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from where a test lives and what it uses: `slow` for tests/process (real processes),
    `postgres` for every test that needs the server (`-m "not slow"`, `-m "not postgres"` select)."""
    for item in items:
        if "process" in item.path.parts:
            item.add_marker(pytest.mark.slow)
        fixtures = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        if "postgres_url" in fixtures or (callspec is not None and callspec.params.get("database_url") == "postgres"):
            item.add_marker(pytest.mark.postgres)
