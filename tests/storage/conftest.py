"""The stores called directly (no gRPC), on each database, with a clock the tests move."""
from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from manager_service.storage import Stores
from manager_service.storage.clock import ManualClock
from manager_service.storage.db import connect, migrate
from manager_service.storage.secretbox import SecretBox


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stores(database_url: str, clock: ManualClock) -> Iterator[Stores]:
    db = connect(database_url)
    migrate(db)
    yield Stores.open(db, SecretBox(bytes(32)), clock)
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A database of its own, with no schema yet, on each database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    admin_url = request.getfixturevalue("admin_url")
    base = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
    name = "quaero_m_" + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
