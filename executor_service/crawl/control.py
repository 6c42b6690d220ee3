"""What bounds one child's network activity: a cancel signal for its whole life (its run ended, its lease
was lost, the executor is stopping) and the deadline of the request in progress. The crawl's blocking
waits all go through here, in slices of at most SLICE_SECONDS, so a stop takes effect within a second."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

SLICE_SECONDS = 0.25


class FetchAborted(httpx.TransportError):
    """The child's fetch was stopped from outside: cancelled, its lease lost, or the executor stopping."""


@dataclass
class Control:
    """What bounds one child's network activity: a cancel signal for its whole life and the deadline of
    the request in progress."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    deadline: float = float("inf")

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise FetchAborted(self.reason or "cancelled")

    def wait(self, seconds: float) -> None:
        """Sleeps, but returns at once (raising FetchAborted) when the child is cancelled."""
        if seconds > 0 and self.cancelled.wait(seconds):
            self.check()
        self.check()

    @contextlib.contextmanager
    def request(self, timeout: float) -> Iterator[Control]:
        """Runs one request of this child (in this thread) under a deadline `timeout` seconds from now."""
        previous_deadline, previous = self.deadline, getattr(_current, "control", None)
        self.deadline = time.monotonic() + timeout
        _current.control = self
        try:
            yield self
        finally:
            self.deadline = previous_deadline
            _current.control = previous


_current = threading.local()
_UNBOUNDED = Control()


def current() -> Control:
    return getattr(_current, "control", None) or _UNBOUNDED


def slice_of(control: Control, started: float, timeout: float | None, timeout_error: type[Exception]) -> float:
    """How long the next blocking wait may last; raises when the deadline or timeout has passed or the
    child was cancelled."""
    control.check()
    now = time.monotonic()
    left = control.deadline - now
    if timeout is not None:
        left = min(left, started + timeout - now)
    if left <= 0:
        raise timeout_error("the request's deadline passed")
    return min(left, SLICE_SECONDS)
