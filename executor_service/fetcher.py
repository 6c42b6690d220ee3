"""HTTP for one page: GET only, redirects followed here (at most 10 hops, cookies recomputed per hop from
the child's jar), robots.txt (RFC 9309) fetched without cookies, per-run-and-host spacing and
Retry-After, logged-out detection, and every byte from the site bounded.

Every way a page can end is a Verdict with a stable reason (see README, "Verdicts"). Knows nothing of
gRPC; talks to any httpx transport (the guarded one in production, httpx.MockTransport in unit tests).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from manager_service.network_policy import NetworkPolicy
from manager_service.patterns import any_search
from manager_service.urls import MAX_URL_LENGTH, is_logout_link, normalise_url

from .content import ACCEPT_ENCODING, MAX_BODY_BYTES, BadContentEncoding, BodyTooLarge, read_body
from .cookie_jar import CookieJar
from .robots import MAX_ROBOTS_BYTES, RobotsRules
from .transport import AddressBlocked, Control, DnsFailed, FetchAborted, TlsFailed

MAX_REDIRECTS = 10
MAX_ROBOTS_REDIRECTS = 5  # RFC 9309 §2.3.1.2
MAX_RETRY_AFTER_SECONDS = 60.0
DEFAULT_RETRY_SECONDS = 5.0  # a 429/503 without Retry-After
ROBOTS_TTL_SECONDS = 3600.0  # robots.txt is read again after an hour, as crawlers commonly do
ROBOTS_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # after 5xx/timeouts, before asking again
MAX_ROBOTS_ORIGINS = 10_000
MAX_SPACING_KEYS = 10_000
MAX_REFUSED_COOKIES = 20  # refused Set-Cookie headers reported per page
REDIRECT_CODES = {301, 302, 303, 307, 308}
DEFAULT_LOGGED_OUT_PATTERNS = [r"(?i)log[-_]?in", r"(?i)sign[-_]?in"]
DEFAULT_USER_AGENT = "quaero/0.1 (+https://quaero.dev/bot)"


class Verdict(Exception):
    """How a page ended, when not with a stored document: a stable reason and a message for a person.
    retry_after is set when the page should be tried again later (a transient refusal)."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class LoggedOut(Verdict):
    """AUTH_EXPIRED (login redirect, expired cookies) or AUTH_REJECTED (401/403). Not retried; the page
    is not stored."""


class FetchFailed(Verdict):
    pass


@dataclass
class FetchResult:
    url: str
    final_url: str
    status_code: int
    content_type: str
    body: bytes | bytearray
    hops: list[str] = field(default_factory=list)
    refused_cookies: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FetchPolicy:
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0
    per_host_delay: float = 0.0
    obey_robots: bool = True
    logged_out: list[Any] = field(default_factory=list)  # compiled RE2 patterns
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    run_id: str = ""  # spacing is per run and host


def parse_resolve(spec: str) -> dict[str, str]:
    """'a.test=127.0.0.1,b.test=127.0.0.1' -> {'a.test': '127.0.0.1', ...}"""
    mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        host, _, address = item.partition("=")
        if not address:
            raise ValueError(f"resolve entry {item!r} is not HOST=ADDRESS")
        mapping[host.strip().lower()] = address.strip()
    return mapping


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
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next.get(key, 0.0))
            self._set(key, turn + delay)
        control.wait(turn - now)

    def back_off(self, key: tuple[str, str], seconds: float) -> None:
        with self._lock:
            self._set(key, max(self._next.get(key, 0.0), time.monotonic() + seconds))


def retry_after_seconds(value: str | None) -> float | None:
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


@dataclass
class _RobotsEntry:
    rules: RobotsRules | None  # None: unavailable (5xx, timeout) until retry_at
    fetched_at: float
    failures: int = 0
    retry_at: float = 0.0


def _failure(error: Exception, what: str, policy: FetchPolicy) -> Verdict:
    """The verdict for a transport error while fetching `what`."""
    if isinstance(error, FetchAborted):
        raise error
    if isinstance(error, AddressBlocked):
        return FetchFailed("BLOCKED_ADDRESS", f"not fetched: {error}")
    if isinstance(error, DnsFailed):
        return FetchFailed("DNS_FAILED", str(error))
    if isinstance(error, TlsFailed):
        return FetchFailed("TLS_FAILED", f"TLS handshake with {what} failed: {error}")
    if isinstance(error, httpx.TimeoutException):
        return FetchFailed("FETCH_TIMEOUT", f"{what} did not answer in full within {policy.timeout:g} s "
                           "(request_timeout_seconds: connect, headers and body)")
    if isinstance(error, httpx.ConnectError):
        return FetchFailed("CONNECT_FAILED", f"cannot reach {what}: {error}")
    if isinstance(error, httpx.ProtocolError | httpx.ReadError | httpx.WriteError):
        return FetchFailed("BAD_RESPONSE", f"{what} sent a broken HTTP response ({type(error).__name__})")
    return FetchFailed("FETCH_FAILED", f"cannot fetch {what}: {type(error).__name__}")


class Fetcher:
    def __init__(self, transport: httpx.BaseTransport, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.spacing = HostSpacing()
        self._robots: OrderedDict[str, _RobotsEntry] = OrderedDict()
        self._robots_lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        self.transport.close()

    # ---- one request ---------------------------------------------------------------------------
    def _request(self, url: str, headers: list[tuple[bytes, bytes]], policy: FetchPolicy) -> httpx.Request:
        timeout = {"connect": policy.timeout, "read": policy.timeout, "write": policy.timeout, "pool": policy.timeout}
        return httpx.Request("GET", url, headers=headers,
                             extensions={"timeout": timeout, "network_policy": policy.network})

    def _headers(self, policy: FetchPolicy, cookie: str = "") -> list[tuple[bytes, bytes]]:
        headers = [(b"User-Agent", policy.user_agent.encode("ascii", "replace")),
                   (b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
                   (b"Accept-Encoding", ACCEPT_ENCODING.encode())]
        if cookie:
            headers.append((b"Cookie", cookie.encode("ascii")))
        return headers

    @contextlib.contextmanager
    def _send(self, request: httpx.Request) -> Iterator[httpx.Response]:
        response = self.transport.handle_request(request)
        try:
            yield response
        finally:
            response.close()  # an unread body closes the connection rather than keep it

    @staticmethod
    def _body(response: httpx.Response, limit: int, truncate: bool = False) -> bytes | bytearray:
        length = response.headers.get("content-length", "")
        if not truncate and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(limit)
        return read_body(response.iter_raw(), response.headers.get("content-encoding", ""), limit, truncate)

    # ---- robots.txt ----------------------------------------------------------------------------
    def robots_cached(self, url: str, policy: FetchPolicy) -> bool | None:
        """robots.txt's verdict from the cache alone (no request): None when not known yet."""
        parts = urlsplit(url)
        with self._robots_lock:
            entry = self._robots.get(f"{parts.scheme}://{parts.netloc}")
        if entry is None or entry.rules is None or self._clock() - entry.fetched_at > ROBOTS_TTL_SECONDS:
            return None
        return entry.rules.allows(url)

    def robots_allows(self, url: str, policy: FetchPolicy, control: Control) -> bool:
        """RFC 9309: 2xx is obeyed, 4xx allows everything, 5xx or no full answer means 'try later'
        (Verdict with retry_after, with a growing backoff before robots.txt is asked again)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = self._clock()
        with self._robots_lock:
            entry = self._robots.get(origin)
        if entry is not None and entry.rules is None and now < entry.retry_at:
            raise Verdict("ROBOTS_UNAVAILABLE", f"{origin}/robots.txt could not be read lately; the page waits",
                          retry_after=entry.retry_at - now)
        if entry is None or entry.rules is None or now - entry.fetched_at > ROBOTS_TTL_SECONDS:
            failures = entry.failures if entry is not None and entry.rules is None else 0
            entry = self._read_robots(origin, policy, control, failures)
            with self._robots_lock:
                self._robots[origin] = entry
                self._robots.move_to_end(origin)
                while len(self._robots) > MAX_ROBOTS_ORIGINS:
                    self._robots.popitem(last=False)
            if entry.rules is None:
                raise Verdict("ROBOTS_UNAVAILABLE", f"{origin}/robots.txt is unavailable (a server error or no "
                              "full answer); by RFC 9309 nothing may be fetched until it is read",
                              retry_after=entry.retry_at - self._clock())
        assert entry.rules is not None
        return entry.rules.allows(url)

    def _read_robots(self, origin: str, policy: FetchPolicy, control: Control, failures: int) -> _RobotsEntry:
        unavailable = _RobotsEntry(None, self._clock(), failures + 1,
                                   self._clock() + ROBOTS_BACKOFF_SECONDS[min(failures, len(ROBOTS_BACKOFF_SECONDS) - 1)])
        target = origin + "/robots.txt"
        for _hop in range(MAX_ROBOTS_REDIRECTS + 1):
            host_key = (policy.run_id, urlsplit(target).netloc)
            self.spacing.wait_turn(host_key, policy.per_host_delay, control)
            try:
                # Fetched without cookies: robots.txt is public and must not learn the session.
                with control.request(policy.timeout):
                    with self._send(self._request(target, self._headers(policy), policy)) as response:
                        status = response.status_code
                        location = response.headers.get("location")
                        body = self._body(response, MAX_ROBOTS_BYTES, truncate=True) if 200 <= status < 300 else b""
            except BadContentEncoding:
                return _RobotsEntry(RobotsRules.allow_everything(), self._clock())
            except (httpx.TimeoutException, httpx.ProtocolError, httpx.ReadError):
                return unavailable  # no full answer: like a 5xx
            except httpx.TransportError as error:
                # The host cannot be reached at all: say so (the page would fail the same way).
                raise _failure(error, origin, policy) from None
            if status in REDIRECT_CODES and location:
                following = normalise_url(location, target)
                if following is None:
                    break
                target = following
                continue
            if 200 <= status < 300:
                text = body.decode("utf-8", errors="replace")
                return _RobotsEntry(RobotsRules.parse(text, policy.user_agent), self._clock())
            if status == 429 or status >= 500:
                return unavailable
            break  # 4xx (and anything else): no rules apply
        return _RobotsEntry(RobotsRules.allow_everything(), self._clock())

    # ---- a page --------------------------------------------------------------------------------
    def fetch(self, url: str, jar: CookieJar, policy: FetchPolicy, control: Control | None = None) -> FetchResult:
        control = control or Control()
        current = url
        hops: list[str] = []
        refused: list[tuple[str, str]] = []
        while True:
            control.check()
            if policy.obey_robots and not self.robots_allows(current, policy, control):
                raise FetchFailed("ROBOTS_DISALLOWED", f"robots.txt disallows {current}")
            host = urlsplit(current).netloc
            self.spacing.wait_turn((policy.run_id, host), policy.per_host_delay, control)
            request = self._request(current, self._headers(policy, jar.header_for(current)), policy)
            try:
                with control.request(policy.timeout):
                    with self._send(request) as response:
                        outcome = self._hop(url, current, response, jar, policy, refused)
                        if isinstance(outcome, FetchResult):
                            outcome.body = self._body(response, MAX_BODY_BYTES)
            except BodyTooLarge as error:
                raise FetchFailed("BODY_TOO_LARGE", f"{current}: {error} (the limit for a page)") from None
            except BadContentEncoding as error:
                raise FetchFailed("BAD_CONTENT_ENCODING", f"{current}: {error}") from None
            except httpx.TransportError as error:
                raise _failure(error, host, policy) from None
            if isinstance(outcome, str):
                hops.append(current)
                if len(hops) > MAX_REDIRECTS:
                    raise FetchFailed("TOO_MANY_REDIRECTS", f"more than {MAX_REDIRECTS} redirects from {url}")
                current = outcome
                continue
            outcome.hops = hops
            outcome.refused_cookies = refused
            return outcome

    def _hop(self, url: str, current: str, response: httpx.Response, jar: CookieJar, policy: FetchPolicy,
             refused: list[tuple[str, str]]) -> FetchResult | str:
        """What one response means: a redirect target (str), the final response (FetchResult, body not
        read yet), or a Verdict."""
        for set_cookie in response.headers.get_list("set-cookie"):
            refusal = jar.store_set_cookie(current, set_cookie)
            if refusal is not None and len(refused) < MAX_REFUSED_COOKIES:
                refused.append(refusal)
        status = response.status_code
        host = urlsplit(current).netloc
        if status in (429, 503):
            wait = retry_after_seconds(response.headers.get("retry-after"))
            self.spacing.back_off((policy.run_id, host), wait if wait is not None else DEFAULT_RETRY_SECONDS)
            reason = "RATE_LIMITED" if status == 429 else "SERVER_UNAVAILABLE"
            raise Verdict(reason, f"{current} answered {status}; the page is tried again later",
                          retry_after=wait if wait is not None else DEFAULT_RETRY_SECONDS)
        location = response.headers.get("location")
        if status in REDIRECT_CODES and location:
            return self._redirect_target(url, current, location, policy)
        if status in (401, 403):
            raise LoggedOut("AUTH_REJECTED", f"not authenticated: {current} answered {status}; the site "
                            "refused the stored session")
        content_type = response.headers.get("content-type", "")[:255]
        return FetchResult(url=url, final_url=current, status_code=status, content_type=content_type, body=b"")

    @staticmethod
    def _redirect_target(url: str, current: str, location: str, policy: FetchPolicy) -> str:
        if len(location) > MAX_URL_LENGTH:
            raise FetchFailed("BAD_REDIRECT", f"{current} redirects to a URL longer than {MAX_URL_LENGTH} characters")
        target = normalise_url(location, current)
        if target is None:
            scheme = location.split(":", 1)[0].strip()[:20] if ":" in location else ""
            foreign = scheme.isalpha() and scheme.lower() not in ("http", "https")
            what = f"a {scheme}: URL" if foreign else "a URL it cannot follow"
            raise FetchFailed("BAD_REDIRECT", f"{current} redirects to {what}, not an http(s) page")
        path = urlsplit(target).path
        if any_search(policy.logged_out, path):
            raise LoggedOut("AUTH_EXPIRED", f"not authenticated: {current} redirected to the login page "
                            f"{path[:200]}; the session has expired or was logged out; import fresh cookies")
        if is_logout_link(target):
            raise FetchFailed("LOGOUT_REDIRECT", f"{current} redirects to a logout URL; not followed")
        return target
