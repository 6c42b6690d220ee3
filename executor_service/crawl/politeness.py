"""Politeness: requests of one run to one host spaced by the run's delay, and a server's Retry-After."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from email.utils import parsedate_to_datetime

from .control import Control

MAX_RETRY_AFTER_SECONDS = 60.0
DEFAULT_RETRY_SECONDS = 5.0  # a 429/503 without Retry-After
MAX_SPACING_KEYS = 10_000


class HostSpacing:
    """Spaces the requests of one run to one host by the run's delay, and honours Retry-After, across
    all worker threads. Keyed by (run, host): one run's delay never holds up another run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _set(self, key: tuple[str, str], moment: float) -> None:
        self._next[key] = moment
        self._next.move_to_end(key)
        while len(self._next) > MAX_SPACING_KEYS:
            self._next.popitem(last=False)

    def wait_turn(self, key: tuple[str, str], delay: float, control: Control) -> None:
        """Waits for this run's next turn at the host; a cancelled child stops waiting at once."""
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next.get(key, 0.0))
            self._set(key, turn + delay)
        control.wait(turn - now)

    def back_off(self, key: tuple[str, str], seconds: float) -> None:
        with self._lock:
            self._set(key, max(self._next.get(key, 0.0), time.monotonic() + seconds))


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds within [0, 60]; None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
