"""Which cookies may be stored (RFC 6265, RFC 6265bis and the cookie-prefix rules). Shared by the
credential store, the cookie import and the crawler, which applies the same rules to the cookies sites
set during a crawl.

Reasons name the cookie, never its value.
"""
from __future__ import annotations

import ipaddress
import re
import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from .model import StoredCookie

MAX_COOKIE_BYTES = 4096  # name + value, as browsers count it
MAX_COOKIES_PER_DOMAIN = 180  # per registrable domain, as Chrome keeps
MAX_COOKIES_PER_JAR = 3000  # in one child's jar (Chrome keeps 3,300 in a whole profile)
MAX_COOKIE_SET_BYTES = 1024 * 1024  # one set of stored credentials, so that GetCredentials fits any client
MAX_EXPIRY = timedelta(days=400)  # RFC 6265bis: a later expiry is brought back to 400 days
# RFC 6265 §4.1.1: cookie-name is an HTTP token; cookie-value is cookie-octets, optionally in quotes
# (no space, '"', ',', ';', '\\', control characters or anything outside ASCII).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_OCTETS = re.compile(r'[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*')
_PATH_CHARACTERS = re.compile(r"[\x20-\x3a\x3c-\x7e]*")  # printable ASCII but ';'


@lru_cache(maxsize=1)
def public_suffixes() -> PublicSuffixList:
    """The one public-suffix list of the process (loading it costs ~10 MB and ~100 ms)."""
    return PublicSuffixList()


def load_public_suffixes_in_background() -> None:
    """A service starts loading the list now, on a thread of its own, so that its first request that needs
    it (a run's first page, a PutCredentials) does not wait ~100-300 ms for it."""
    threading.Thread(target=public_suffixes, name="public-suffixes", daemon=True).start()


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
    return public_suffixes().is_public(domain)


@lru_cache(maxsize=4096)
def registrable_domain(host: str) -> str:
    """The registrable domain (eTLD+1) of a host, or the host itself (IP addresses, localhost,
    public suffixes). Cached: a crawl asks it of every link it finds, on a few hosts (the list's lookup
    and the IP literal's parse cost ~20 µs a link)."""
    host = host.lower().rstrip(".")
    if not host or is_ip_address(host):
        return host
    return public_suffixes().privatesuffix(host) or host


def canonical_domain(domain: str) -> str:
    """A cookie's domain as stored: lower case without a leading dot. A trailing dot stays: a browser
    treats 'example.com.' as another host than 'example.com'."""
    return domain.strip().lower().lstrip(".")


def canonical_site(site: str) -> str:
    """A site name as the user gives it ('Example.com.' -> 'example.com')."""
    return site.strip().lower().strip(".")


def belongs_to_site(cookie: StoredCookie, site: str) -> bool:
    """The cookie is for the site, one of its subdomains, or a parent domain the site shares cookies
    with (a domain cookie for example.com stored for app.example.com)."""
    domain, site = canonical_domain(cookie.domain).rstrip("."), canonical_site(site)
    return domain == site or domain.endswith("." + site) or (not cookie.host_only and site.endswith("." + domain))


def clamp_expiry(expires: datetime | None, now: datetime | None = None) -> datetime | None:
    """RFC 6265bis §5.5: no cookie lives longer than 400 days from when it was set."""
    if expires is None:
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    latest = (now or datetime.now(UTC)) + MAX_EXPIRY
    return min(expires, latest)


def is_cookie_value(value: str) -> bool:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return _COOKIE_OCTETS.fullmatch(value) is not None


def _shown(name: str) -> str:
    return repr(name if len(name) <= 64 else name[:64] + "…")


def rejection_reason(cookie: StoredCookie, site: str = "") -> str | None:
    """Why this cookie may not be stored (for `site`, when given), or None when it may."""
    name = cookie.name
    if not name or _TOKEN.fullmatch(name) is None:
        return f"cookie {_shown(name)}: the name is empty or has characters a cookie name cannot have"
    if not is_cookie_value(cookie.value):
        return (f"cookie {_shown(name)}: the value has characters RFC 6265 does not allow (space, '\"', ',', ';', "
                "'\\', control characters or non-ASCII)")
    if len(name.encode()) + len(cookie.value.encode()) > MAX_COOKIE_BYTES:
        return f"cookie {_shown(name)} is larger than {MAX_COOKIE_BYTES} bytes"
    domain = canonical_domain(cookie.domain)
    if not domain.strip("."):
        return f"cookie {_shown(name)} has no domain"
    if not cookie.path.startswith("/") or _PATH_CHARACTERS.fullmatch(cookie.path) is None:
        return f"cookie {_shown(name)}: the path must start with '/' and hold printable ASCII but ';'"
    if len(cookie.path) > 1024:
        return f"cookie {_shown(name)}: the path is longer than 1024 characters"
    if not cookie.host_only and is_public_suffix(domain):
        # (A host-only cookie for such a name, e.g. "localhost", reaches only that exact host.)
        return f"cookie {_shown(name)}: its domain {domain!r} is a public suffix, shared by unrelated sites"
    if not cookie.host_only and is_ip_address(domain):
        return f"cookie {_shown(name)}: a domain cookie cannot be set for an IP address"
    if name.startswith("__Secure-") and not cookie.secure:
        return f"cookie {_shown(name)}: a __Secure- cookie must be Secure"
    if name.startswith("__Host-") and (not cookie.secure or not cookie.host_only or cookie.path != "/"):
        return f"cookie {_shown(name)}: a __Host- cookie must be Secure, host-only (no Domain) and have path '/'"
    if site and not belongs_to_site(cookie, site):
        return f"cookie {_shown(name)}: its domain {domain!r} is not part of {canonical_site(site)}"
    return None


def domain_matches(host: str, cookie: StoredCookie) -> bool:
    """RFC 6265 §5.1.3: a host-only cookie goes only to its host; a domain cookie to its domain and its
    subdomains, never to an IP address. Hosts compare as written ('example.com.' is another host)."""
    host = host.lower()
    domain = cookie.domain
    if cookie.host_only:
        return host == domain
    if is_ip_address(host):
        return False
    return host == domain or host.endswith("." + domain)


def path_matches(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 §5.1.4: '/app' covers '/app' and '/app/x', not '/apple'."""
    if request_path == cookie_path:
        return True
    if request_path.startswith(cookie_path):
        return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    return False


def default_path(request_path: str) -> str:
    """RFC 6265 §5.1.4: the path a cookie set without Path gets."""
    if not request_path.startswith("/") or request_path.count("/") <= 1:
        return "/"
    return request_path[: request_path.rfind("/")]
