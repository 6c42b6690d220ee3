"""A cookie a run's session learned from a site's response (what executors send the manager with a page's
record, and what the manager hands executors with their leases), and the rules both sides apply to it."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from .model import StoredCookie
from .rules import domain_matches, rejection_reason

MAX_SET_BY_URL_CHARS = 4096
MAX_SESSION_COOKIES_PER_PAGE = 200  # what one page's record carries (the last set of each cookie, newest)
# A run's session is bounded as a browser profile's cookies for a site are: past either limit a new cookie
# is not kept (one already there may still be replaced), so that a session always fits a lease's answer.
MAX_RUN_SESSION_COOKIES = 500
MAX_RUN_SESSION_BYTES = 512 * 1024

Key = tuple[str, str, str]  # (domain, path, name): what a new cookie of the same key replaces


@dataclass
class SessionCookie:
    cookie: StoredCookie
    set_by_url: str  # the response's URL: its host must domain-match the cookie
    set_at: datetime  # when that response arrived: a later one wins
    removed: bool = False  # the response expired the cookie

    @property
    def key(self) -> Key:
        return key_of(self.cookie)


def newest_per_key(items: Iterable[SessionCookie]) -> dict[Key, SessionCookie]:
    """The newest of each cookie (a later `set_at` wins; at a tie, the later in `items`)."""
    newest: dict[Key, SessionCookie] = {}
    for item in items:
        current = newest.get(item.key)
        if current is None or current.set_at <= item.set_at:
            newest[item.key] = item
    return newest


def key_of(cookie: StoredCookie) -> Key:
    return (cookie.domain, cookie.path, cookie.name)


def session_cookie_problem(item: SessionCookie) -> str | None:
    """Why a session cookie may not join a run's session, or None. The same rules as a browser's jar: the
    cookie itself (RFC 6265, prefixes, public suffixes), and the host whose response set it must
    domain-match it (a host-only cookie: be its host)."""
    if len(item.set_by_url) > MAX_SET_BY_URL_CHARS:
        return f"set_by_url is longer than {MAX_SET_BY_URL_CHARS} characters"
    parts = urlsplit(item.set_by_url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return "set_by_url must be the http(s) URL whose response set the cookie"
    if not domain_matches(host, item.cookie):
        return f"cookie {item.cookie.name[:64]!r}: {host} may not set a cookie for {item.cookie.domain!r}"
    if item.cookie.secure and parts.scheme != "https" and not item.removed:
        return f"cookie {item.cookie.name[:64]!r}: only an https response can set a Secure cookie"
    if item.removed:
        return None
    return rejection_reason(item.cookie)
