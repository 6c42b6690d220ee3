"""Shared fixtures: real managers (in-process gRPC servers on loopback) on SQLite and PostgreSQL."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from manager_service.client import ManagerClient
from manager_service.config import ManagerSettings
from manager_service.server import ManagerServer

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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'quaero.db'}"
    return str(request.getfixturevalue("postgres_url"))


@dataclass
class RunningManager:
    server: ManagerServer
    address: str
    token: str
    client: ManagerClient
    data_dir: Path

    def connect(self, token: str | None = None) -> ManagerClient:
        return ManagerClient.connect(self.address, token if token is not None else self.token)


def start_in_process_manager(data_dir: Path, database_url: str) -> RunningManager:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = ManagerSettings(data_dir=data_dir, database_url=database_url, api_token=TOKEN)
    server = ManagerServer(settings, "127.0.0.1:0")
    port = server.start()
    address = f"127.0.0.1:{port}"
    return RunningManager(server, address, TOKEN, ManagerClient.connect(address, TOKEN), data_dir)


@pytest.fixture
def manager(database_url: str, tmp_path: Path) -> Iterator[RunningManager]:
    running = start_in_process_manager(tmp_path / "data", database_url)
    yield running
    running.client.close()
    running.server.stop(grace=1)


@pytest.fixture
def sqlite_manager(tmp_path: Path) -> Iterator[RunningManager]:
    running = start_in_process_manager(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'quaero.db'}")
    yield running
    running.client.close()
    running.server.stop(grace=1)


@pytest.fixture
def harness(sqlite_manager: RunningManager) -> Iterator[Any]:
    from tests.support.crawl import CrawlHarness

    running = CrawlHarness(sqlite_manager)
    yield running
    running.close()


@pytest.fixture
def db_harness(manager: RunningManager) -> Iterator[Any]:
    """A crawl harness on each database (SQLite and PostgreSQL)."""
    from tests.support.crawl import CrawlHarness

    running = CrawlHarness(manager)
    yield running
    running.close()


@pytest.fixture
def tls_harness(sqlite_manager: RunningManager, tmp_path: Path) -> Iterator[Any]:
    """A crawl harness whose executor trusts a certificate for the test hosts; `tls_context` serves it."""
    from tests.support.crawl import CrawlHarness
    from tests.support.tls import make_certificate, server_context

    cert, key = make_certificate(tmp_path, ["app.site.test", "sub.app.site.test"])
    running = CrawlHarness(sqlite_manager, ca_bundle=str(cert))
    running.tls_context = server_context(cert, key)  # type: ignore[attr-defined]
    yield running
    running.close()
