"""The stores called directly (no gRPC), on each database, with a clock the tests move."""
from __future__ import annotations

from collections.abc import Iterator

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
