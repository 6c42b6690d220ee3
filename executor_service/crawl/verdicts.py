"""How a page ends when it does not end with a stored document: a Reason and a message for a person,
and, for a transient refusal (robots.txt 503, 429), how long to wait before the next attempt."""
from __future__ import annotations

from quaero.errors import Reason


class Verdict(Exception):
    def __init__(self, reason: Reason, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class LoggedOut(Verdict):
    """AUTH_EXPIRED (login redirect, expired cookies) or AUTH_REJECTED (401/403). Not retried; the page
    is not stored."""


class FetchFailed(Verdict):
    """The page cannot be fetched (timeouts, bodies, redirects, addresses, broken HTTP...)."""
