"""URLs as the crawl keeps them: one normal form, so that a page is fetched once per run and every
request target is plain ASCII. Shared by definition checks (start URLs) and the crawler (links and
redirects). Knows nothing of gRPC or HTTP."""
from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from .cookies import is_ip_address

# Links longer than this are not followed and redirects to them fail BAD_REDIRECT (Scrapy drops
# links over 2,083 characters; browsers allow far more, sites rarely need it).
MAX_URL_LENGTH = 4096
LOGOUT = re.compile(r"(^|[/_.-])(log-?out|sign-?out|log_out|sign_out)([/_.?-]|$)|[?&]action=(logout|signout)",
                    re.IGNORECASE)
# What a browser leaves as it is in a path or query; everything else is percent-encoded as UTF-8.
_SAFE = "/:@!$&'()*+,;=-._~%?"
_REMOVED = re.compile(r"[\t\n\r]")  # the URL standard drops these anywhere in a URL
_FORBIDDEN_HOST = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")


def _ascii_host(host: str) -> str | None:
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if _FORBIDDEN_HOST.search(host):
        return None
    return host


def normalise_url(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL: no fragment, no user:password@, lower-case scheme and host (IDNA),
    no default port, non-ASCII and spaces percent-encoded, at most MAX_URL_LENGTH characters; None when
    the URL is not one the crawl can fetch."""
    try:
        text = _REMOVED.sub("", url.strip(" \x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10"
                                           "\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"))
        absolute = urljoin(base, text) if base else text
        parts = urlsplit(absolute)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        if not is_ip_address(host):
            return None
        host = f"[{host}]"
    else:
        ascii_host = _ascii_host(host)
        if ascii_host is None:
            return None
        host = ascii_host
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    path = quote(parts.path or "/", safe=_SAFE)
    query = quote(parts.query, safe=_SAFE)
    normal = urlunsplit((scheme, netloc, path, query, ""))
    return normal if len(normal) <= MAX_URL_LENGTH else None


def has_credentials(url: str) -> bool:
    """True when the URL carries user:password@ (which the crawl never sends)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None


def is_logout_link(url: str) -> bool:
    parts = urlsplit(url)
    return bool(LOGOUT.search(parts.path)) or bool(LOGOUT.search("?" + parts.query if parts.query else ""))
