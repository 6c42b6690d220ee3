"""A child's cookie jar, scoped exactly as a browser scopes cookies (RFC 6265 §5.1.3, §5.1.4, §5.4).

httpx's own jar sends a cookie set without a domain to every host and lets host-only cookies reach
subdomains, so the Cookie header is computed here, for each URL, on every redirect hop.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from manager_service.cookies import StoredCookie, canonical_domain, is_ip_address, is_public_suffix, rejection_reason


def domain_matches(host: str, cookie: StoredCookie) -> bool:
    host = host.lower().rstrip(".")
    domain = cookie.domain
    if cookie.host_only:
        return host == domain
    if is_ip_address(host):
        return False  # a domain cookie never goes to an IP address
    return host == domain or host.endswith("." + domain)


def path_matches(request_path: str, cookie_path: str) -> bool:
    """'/app' covers '/app' and '/app/x', not '/apple'."""
    if request_path == cookie_path:
        return True
    if request_path.startswith(cookie_path):
        return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    return False


def default_path(request_path: str) -> str:
    if not request_path.startswith("/") or request_path.count("/") <= 1:
        return "/"
    return request_path[: request_path.rfind("/")]


class CookieJar:
    def __init__(self, cookies: Iterable[StoredCookie] = ()) -> None:
        self._cookies: dict[tuple[str, str, str], StoredCookie] = {}
        for cookie in cookies:
            self._cookies[(cookie.domain, cookie.path, cookie.name)] = cookie

    def __len__(self) -> int:
        return len(self._cookies)

    def cookies_for(self, url: str, at: datetime | None = None) -> list[StoredCookie]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        path = parts.path or "/"
        secure = parts.scheme == "https"
        moment = at or datetime.now(UTC)
        chosen = [
            cookie for cookie in self._cookies.values()
            if domain_matches(host, cookie) and path_matches(path, cookie.path)
            and (secure or not cookie.secure) and not cookie.is_expired(moment)
        ]
        # Longer paths first (RFC 6265 §5.4 step 2).
        chosen.sort(key=lambda cookie: -len(cookie.path))
        return chosen

    def header_for(self, url: str) -> str:
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.cookies_for(url))

    def all_expired_for(self, url: str) -> bool:
        """True when the jar had cookies for this host and every one has expired."""
        host = (urlsplit(url).hostname or "").lower()
        relevant = [cookie for cookie in self._cookies.values() if domain_matches(host, cookie)]
        return bool(relevant) and all(cookie.is_expired() for cookie in relevant)

    def store_set_cookie(self, url: str, header: str, received_at: datetime | None = None) -> StoredCookie | None:
        """Takes a Set-Cookie header the way a browser would; returns the cookie, or None if ignored."""
        parsed = parse_set_cookie(url, header, received_at or datetime.now(UTC))
        if parsed is None:
            return None
        key = (parsed.domain, parsed.path, parsed.name)
        if parsed.is_expired(received_at):
            self._cookies.pop(key, None)  # an expiry in the past deletes the cookie
            return parsed
        self._cookies[key] = parsed
        return parsed


def parse_set_cookie(url: str, header: str, now: datetime) -> StoredCookie | None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    pair, *attributes = header.split(";")
    if "=" not in pair:
        return None
    name, value = (piece.strip() for piece in pair.split("=", 1))
    cookie = StoredCookie(name=name, value=value, domain=host, host_only=True, path=default_path(parts.path or "/"))
    max_age: int | None = None
    for attribute in attributes:
        key, _, raw = attribute.strip().partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if key == "domain" and raw:
            domain = canonical_domain(raw)
            if is_public_suffix(domain) and domain != host:
                return None  # a Domain of a public suffix is refused
            if domain == host and is_public_suffix(domain):
                continue
            if not (host == domain or (host.endswith("." + domain) and not is_ip_address(host))):
                return None  # a site cannot set cookies for another domain
            cookie.domain, cookie.host_only = domain, False
        elif key == "path" and raw.startswith("/"):
            cookie.path = raw
        elif key == "secure":
            cookie.secure = True
        elif key == "httponly":
            cookie.http_only = True
        elif key == "samesite":
            cookie.same_site = raw.lower()
        elif key == "max-age":
            try:
                max_age = int(raw)
            except ValueError:
                continue
        elif key == "expires" and max_age is None:
            try:
                expires = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            cookie.expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    if max_age is not None:
        cookie.expires = now + timedelta(seconds=max_age) if max_age > 0 else datetime.fromtimestamp(0, UTC)
    if cookie.secure and parts.scheme != "https":
        return None  # only a secure origin may set a Secure cookie
    if rejection_reason(cookie) is not None and not cookie.is_expired(now):
        return None
    return cookie
