"""Which cookies may be stored (RFC 6265 and the cookie-prefix rules). Shared by the credential
store and by the crawler, which applies the same rules to cookies sites set during a crawl.

Reasons name the cookie, never its value.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

MAX_COOKIE_BYTES = 4096


@dataclass
class StoredCookie:
    name: str
    value: str
    domain: str
    host_only: bool = True
    path: str = "/"
    secure: bool = False
    http_only: bool = False
    expires: datetime | None = None  # None: a session cookie
    same_site: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def is_expired(self, at: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (at or datetime.now(UTC))


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_public_suffix(domain: str) -> bool:
    domain = domain.lower().strip(".")
    if not domain or is_ip_address(domain):
        return False
    return _public_suffixes().is_public(domain)


def canonical_domain(domain: str) -> str:
    return domain.strip().lower().lstrip(".").rstrip(".")


def _bad_characters(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == ";" for ch in text)


def rejection_reason(cookie: StoredCookie) -> str | None:
    """Why this cookie may not be stored, or None when it may."""
    name = cookie.name
    if not name or _bad_characters(name) or "=" in name or any(ch in name for ch in " \t,\"\\"):
        return "the name is empty or has characters a cookie name cannot have"
    if _bad_characters(cookie.value):
        return f"cookie {name!r}: the value has ';', CR, LF or control characters"
    if len(name.encode()) + len(cookie.value.encode()) > MAX_COOKIE_BYTES:
        return f"cookie {name!r} is larger than {MAX_COOKIE_BYTES} bytes"
    domain = canonical_domain(cookie.domain)
    if not domain:
        return f"cookie {name!r} has no domain"
    if _bad_characters(cookie.path) or not cookie.path.startswith("/"):
        return f"cookie {name!r}: the path must start with '/'"
    if not cookie.host_only and is_public_suffix(domain):
        # (A host-only cookie for such a name, e.g. "localhost", reaches only that exact host.)
        return f"cookie {name!r}: its domain {domain!r} is a public suffix, shared by unrelated sites"
    if not cookie.host_only and is_ip_address(domain):
        return f"cookie {name!r}: a domain cookie cannot be set for an IP address"
    if name.startswith("__Secure-") and not cookie.secure:
        return f"cookie {name!r}: a __Secure- cookie must be Secure"
    if name.startswith("__Host-") and (not cookie.secure or not cookie.host_only or cookie.path != "/"):
        return f"cookie {name!r}: a __Host- cookie must be Secure, host-only (no Domain) and have path '/'"
    return None
