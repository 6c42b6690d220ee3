"""A child's cookie jar, scoped exactly as a browser scopes cookies (RFC 6265 §5.1.3, §5.1.4, §5.4 and
RFC 6265bis), and the only source of the Cookie header a crawl sends.

httpx's own jar sends a cookie set without a domain to every host and lets host-only cookies reach
subdomains, and a client-wide jar carries one run's cookies into the next: the crawl has no HTTP-library
jar at all (see transport.py), and this jar lives for one child. Hosts are compared as they are
written: 'example.com.' is another host than 'example.com', as in a browser. A site cannot grow the
jar without bound: at most MAX_COOKIES_PER_DOMAIN per registrable domain and MAX_COOKIES_PER_JAR in
all, the least recently used evicted first.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import count
from urllib.parse import urlsplit

from quaero.cookies import (
    MAX_COOKIE_BYTES,
    MAX_COOKIES_PER_DOMAIN,
    MAX_COOKIES_PER_JAR,
    MAX_EXPIRY,
    StoredCookie,
    canonical_domain,
    clamp_expiry,
    default_path,
    domain_matches,
    is_ip_address,
    is_public_suffix,
    path_matches,
    registrable_domain,
    rejection_reason,
)
from quaero.cookies.session import MAX_SESSION_COOKIES_PER_PAGE, SessionCookie

Key = tuple[str, str, str]  # (domain, path, name)
EPOCH = datetime.fromtimestamp(0, UTC)


class CookieJar:
    def __init__(self, cookies: Iterable[StoredCookie] = (),
                 on_commit: Callable[[list[SessionCookie]], None] | None = None) -> None:
        """`on_commit` hears, hop by hop, what the site set (commit_hop): the run's session (sessions.py)."""
        self._changes: dict[Key, SessionCookie] = {}  # what committed responses set or expired, the last per key
        self._uncommitted: list[SessionCookie] = []
        self._on_commit = on_commit
        self._cookies: dict[Key, StoredCookie] = {}
        self._last_used: dict[Key, int] = {}
        self._site_of: dict[Key, str] = {}
        self._per_site: dict[str, int] = {}
        self._clock = count()
        for cookie in cookies:
            self._add((cookie.domain, cookie.path, cookie.name), cookie)

    def __len__(self) -> int:
        return len(self._cookies)

    def cookies_for(self, url: str, at: datetime | None = None) -> list[StoredCookie]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        path = parts.path or "/"
        secure = parts.scheme == "https"
        moment = at or datetime.now(UTC)
        chosen = [
            (key, cookie) for key, cookie in self._cookies.items()
            if domain_matches(host, cookie) and path_matches(path, cookie.path)
            and (secure or not cookie.secure) and not cookie.is_expired(moment)
        ]
        tick = next(self._clock)
        for key, _cookie in chosen:
            self._last_used[key] = tick
        # Longer paths first (RFC 6265 §5.4 step 2).
        chosen.sort(key=lambda item: -len(item[1].path))
        return [cookie for _key, cookie in chosen]

    def header_for(self, url: str) -> str:
        # A cookie that breaks the rules (stored before they were checked) is never sent: a header it
        # cannot be encoded into must not fail the page.
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.cookies_for(url)
                         if rejection_reason(cookie) is None)

    def all_expired_for(self, url: str) -> bool:
        """True when the jar had cookies for this host and every one has expired."""
        host = (urlsplit(url).hostname or "").lower()
        relevant = [cookie for cookie in self._cookies.values() if domain_matches(host, cookie)]
        return bool(relevant) and all(cookie.is_expired() for cookie in relevant)

    def store_set_cookie(self, url: str, header: str, received_at: datetime | None = None) -> tuple[str, str] | None:
        """Takes a Set-Cookie header the way a browser would. Returns (name, reason) when the cookie was
        refused for breaking the rules (the caller reports it by name, never by value), else None."""
        now = received_at or datetime.now(UTC)
        parsed, reason = parse_set_cookie(url, header, now)
        if parsed is None:
            return reason
        key = (parsed.domain, parsed.path, parsed.name)
        if urlsplit(url).scheme != "https" and self._shadows_secure(parsed):
            return (parsed.name, "an http response cannot replace a Secure cookie (RFC 6265bis §5.7)")
        if parsed.is_expired(now):
            self._remove(key)  # an expiry in the past deletes the cookie
            self._uncommitted.append(SessionCookie(parsed, url, now, removed=True))
            return None
        self._add(key, parsed)
        self._uncommitted.append(SessionCookie(parsed, url, now))
        return None

    @property
    def changes(self) -> list[SessionCookie]:
        """What committed responses set or expired: the last of each cookie, oldest first, at most
        MAX_SESSION_COOKIES_PER_PAGE (the newest)."""
        return list(self._changes.values())[-MAX_SESSION_COOKIES_PER_PAGE:]

    def commit_hop(self) -> None:
        """What the last response set counts beyond this jar: its run's session hears it."""
        committed, self._uncommitted = self._uncommitted, []
        if committed:
            for item in committed:
                self._changes.pop(item.key, None)
                self._changes[item.key] = item
            if self._on_commit is not None:
                self._on_commit(committed[-MAX_SESSION_COOKIES_PER_PAGE:])

    def discard_hop(self) -> None:
        """What the last response set stays in this jar alone (the response said the page is logged out: a
        stale request's answer must not undo the run's session)."""
        self._uncommitted = []

    def _shadows_secure(self, cookie: StoredCookie) -> bool:
        for existing in self._cookies.values():
            if existing.secure and existing.name == cookie.name and path_matches(cookie.path, existing.path) and (
                    domain_matches(cookie.domain, existing) or domain_matches(existing.domain, cookie)):
                return True
        return False

    def _add(self, key: Key, cookie: StoredCookie) -> None:
        if key not in self._cookies:
            site = self._site_of[key] = registrable_domain(cookie.domain)
            self._per_site[site] = self._per_site.get(site, 0) + 1
        self._cookies[key] = cookie
        self._last_used[key] = next(self._clock)
        site = self._site_of[key]
        if self._per_site[site] > MAX_COOKIES_PER_DOMAIN:
            self._evict([k for k in self._cookies if self._site_of[k] == site], 1)
        if len(self._cookies) > MAX_COOKIES_PER_JAR:
            self._evict(list(self._cookies), 1)

    def _remove(self, key: Key) -> None:
        if self._cookies.pop(key, None) is not None:
            self._last_used.pop(key, None)
            site = self._site_of.pop(key)
            self._per_site[site] -= 1

    def _evict(self, keys: list[Key], how_many: int) -> None:
        """Expired cookies go first, then the least recently used (Chrome's order, roughly)."""
        now = datetime.now(UTC)
        keys.sort(key=lambda k: (not self._cookies[k].is_expired(now), self._last_used.get(k, -1)))
        for key in keys[:how_many]:
            self._remove(key)


def _expiry(raw: str, now: datetime) -> datetime | None:
    try:
        expires = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)


def parse_set_cookie(url: str, header: str, now: datetime) -> tuple[StoredCookie | None, tuple[str, str] | None]:
    """(cookie, None), or (None, (name, reason)) for a cookie refused by the rules, or (None, None) for a
    header that is silently ignored as a browser ignores it (no '=', for another domain...)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if len(header) > 2 * MAX_COOKIE_BYTES:
        name = header.split("=", 1)[0].strip()[:64]
        return None, (name, f"the Set-Cookie header is larger than {2 * MAX_COOKIE_BYTES} bytes")
    pair, *attributes = header.split(";")
    if "=" not in pair:
        return None, None
    name, value = (piece.strip() for piece in pair.split("=", 1))
    cookie = StoredCookie(name=name, value=value, domain=host, host_only=True, path=default_path(parts.path or "/"))
    max_age: int | None = None
    for attribute in attributes:
        key, _, raw = attribute.strip().partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if key == "domain" and raw:
            domain = canonical_domain(raw)
            if is_public_suffix(domain) and domain != host:
                return None, (name[:64], f"its Domain {domain[:100]!r} is a public suffix")
            if domain == host and (is_ip_address(host) or is_public_suffix(domain)):
                # Identical strings domain-match (RFC 6265 §5.1.3): an address or a public suffix may name
                # itself, and the cookie stays host-only (as browsers keep it), reaching that host alone.
                continue
            if not domain_matches(host, StoredCookie("", "", domain, host_only=False)):
                return None, None  # a site cannot set cookies for another domain: ignored
            cookie.domain, cookie.host_only = domain, False
        elif key == "path" and raw.startswith("/"):
            cookie.path = raw
        elif key == "secure":
            cookie.secure = True
        elif key == "httponly":
            cookie.http_only = True
        elif key == "samesite":
            cookie.same_site = raw.lower()[:16]
        elif key == "max-age":
            try:
                max_age = int(raw)
            except ValueError:
                continue
        elif key == "expires" and max_age is None:
            cookie.expires = _expiry(raw, now)
    if max_age is not None:
        # Clamped before it becomes a timedelta: Max-Age=999999999999 must not overflow.
        seconds = min(max_age, int(MAX_EXPIRY.total_seconds()))
        cookie.expires = now + timedelta(seconds=seconds) if seconds > 0 else EPOCH
    cookie.expires = clamp_expiry(cookie.expires, now)
    if cookie.secure and parts.scheme != "https":
        return None, (name[:64], "only an https response can set a Secure cookie")
    if not cookie.is_expired(now):
        reason = rejection_reason(cookie)
        if reason is not None:
            return None, (name[:64], reason)
    return cookie, None
