"""The time storage writes and compares (lease expiry, retries, timestamps): injectable, so tests drive
time instead of sleeping."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


def aware(moment: datetime) -> datetime:
    """A stored timestamp as UTC (SQLite gives SQLAlchemy's naive UTC back)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(Clock):
    """For tests: the real time plus however far the test has moved it on."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        """From now on the clock reads `moment` (and runs on from it)."""
        with self._lock:
            self._offset = moment - datetime.now(UTC)


SYSTEM = Clock()
