"""HTTP for one page, as a pipeline per hop: prepare (robots.txt, spacing, the Cookie header from the
child's jar) -> send -> absorb (Set-Cookie, Retry-After) -> next_hop (redirect, the page, or a verdict).
At most 10 hops; every byte from the site bounded.

Every way a page can end that is not a stored page is a Verdict with a stable reason (see README,
"Verdicts"). Knows nothing of gRPC; talks to any httpx transport (the guarded one in production,
httpx.MockTransport in unit tests).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from quaero import tracing
from quaero.errors import Reason
from quaero.network_policy import NetworkPolicy

from .content import ACCEPT_ENCODING, MAX_BODY_BYTES, BadContentEncoding, BodyTooLarge, read_body
from .control import Control, FetchAborted
from .cookie_jar import CookieJar
from .hops import Done, Redirect, Stop, next_hop
from .politeness import HostSpacing
from .robots import MAX_ROBOTS_BYTES, RobotsAnswer, RobotsCache, RobotsUnavailable
from .transport import AddressBlocked, DnsFailed, TlsFailed
from .verdicts import FetchFailed, Verdict

MAX_REDIRECTS = 10
# Verdicts that say the request was not signed in (what it set is not the run's session: see CookieJar).
LOGGED_OUT = frozenset({Reason.AUTH_EXPIRED, Reason.AUTH_REJECTED, Reason.LOGOUT_REDIRECT})
MAX_REFUSED_COOKIES = 20  # refused Set-Cookie headers reported per page
DEFAULT_USER_AGENT = "quaero/0.1 (+https://quaero.dev/bot)"


@dataclass
class FetchResult:
    url: str
    final_url: str
    status_code: int
    content_type: str
    body: bytes | bytearray
    hops: list[str] = field(default_factory=list)
    refused_cookies: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # for the page's result (a rendered page's requests...)
    etag: str = ""  # the final response's validators, for the next run's conditional request
    last_modified: str = ""
    not_modified: bool = False  # the site answered 304 to the conditional request's validators


@dataclass(frozen=True)
class Validators:
    """The latest stored version's validators: sent (If-None-Match, If-Modified-Since) only on a hop to the
    URL whose response they came from."""
    url: str
    etag: str = ""
    last_modified: str = ""

    def headers_for(self, url: str) -> list[tuple[bytes, bytes]]:
        if url != self.url:
            return []
        headers = []
        if self.etag:
            headers.append((b"If-None-Match", self.etag.encode("latin-1", "replace")))
        if self.last_modified:
            headers.append((b"If-Modified-Since", self.last_modified.encode("latin-1", "replace")))
        return headers


@dataclass
class FetchPolicy:
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0
    per_host_delay: float = 0.0
    obey_robots: bool = True
    logged_out: list[Any] = field(default_factory=list)  # compiled RE2 patterns
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    run_id: str = ""  # spacing is per run and host
    auth_id: str = ""  # whose credentials the page is signed in with ('' for none): rendered pages share
    # a browser context only within one run and one auth_id


def parse_resolve(spec: str) -> dict[str, str]:
    """'a.test=127.0.0.1,b.test=127.0.0.1' -> {'a.test': '127.0.0.1', ...}"""
    mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        host, _, address = item.partition("=")
        if not address:
            raise ValueError(f"resolve entry {item!r} is not HOST=ADDRESS")
        mapping[host.strip().lower()] = address.strip()
    return mapping


def request_extensions(policy: FetchPolicy) -> dict[str, Any]:
    """What the guarded transport reads from a request: its timeouts and the run's network policy."""
    timeout = {"connect": policy.timeout, "read": policy.timeout, "write": policy.timeout, "pool": policy.timeout}
    return {"timeout": timeout, "network_policy": policy.network}


def verdict_for(error: Exception, what: str, policy: FetchPolicy) -> Verdict:
    """The verdict for a transport error while fetching from `what`."""
    if isinstance(error, FetchAborted):
        raise error
    if isinstance(error, AddressBlocked):
        return FetchFailed(Reason.BLOCKED_ADDRESS, f"not fetched: {error}")
    if isinstance(error, DnsFailed):
        return FetchFailed(Reason.DNS_FAILED, str(error))
    if isinstance(error, TlsFailed):
        return FetchFailed(Reason.TLS_FAILED, f"TLS handshake with {what} failed: {error}")
    if isinstance(error, httpx.TimeoutException):
        return FetchFailed(Reason.FETCH_TIMEOUT, f"{what} did not answer in full within {policy.timeout:g} s "
                           "(request_timeout_seconds: connect, headers and body)")
    if isinstance(error, httpx.ConnectError):
        return FetchFailed(Reason.CONNECT_FAILED, f"cannot reach {what}: {error}")
    if isinstance(error, httpx.ProtocolError | httpx.ReadError | httpx.WriteError):
        return FetchFailed(Reason.BAD_RESPONSE, f"{what} sent a broken HTTP response ({type(error).__name__})")
    return FetchFailed(Reason.FETCH_FAILED, f"cannot fetch {what}: {type(error).__name__}")


class Fetcher:
    def __init__(self, transport: httpx.BaseTransport, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.spacing = HostSpacing()
        self.robots = RobotsCache(clock)

    def close(self) -> None:
        self.transport.close()

    # ---- the pipeline of one hop -------------------------------------------------------------------
    def fetch(self, url: str, jar: CookieJar, policy: FetchPolicy, control: Control | None = None,
              validators: Validators | None = None) -> FetchResult:
        control = control or Control()
        current, hops, refused = url, list[str](), list[tuple[str, str]]()
        while True:
            conditional = validators.headers_for(current) if validators is not None else []
            request = self._prepare(current, jar, policy, control, conditional)
            try:
                with (tracing.step("GET", {"url.full": tracing.safe_url(current)}) as hop,
                      control.request(policy.timeout), self._send(request) as response):
                    if hop is not None:
                        hop["http.response.status_code"] = response.status_code
                    self._absorb(current, response, jar, refused)
                    decision = next_hop(current, response.status_code, response.headers.get("location"),
                                        response.headers.get("retry-after"), policy.logged_out)
                    # (The page's own answer is committed by its reader, once it knows it is no login form.)
                    if isinstance(decision, Stop) and decision.verdict.reason in LOGGED_OUT:
                        jar.discard_hop()
                    elif not isinstance(decision, Done):
                        jar.commit_hop()
                    if isinstance(decision, Done):
                        not_modified = response.status_code == 304 and bool(conditional)
                        return FetchResult(url, current, response.status_code,
                                           response.headers.get("content-type", "")[:255],
                                           b"" if not_modified else self._body(response, MAX_BODY_BYTES), hops,
                                           refused, etag=response.headers.get("etag", "")[:512],
                                           last_modified=response.headers.get("last-modified", "")[:64],
                                           not_modified=not_modified)
            except BodyTooLarge as error:
                raise FetchFailed(Reason.BODY_TOO_LARGE, f"{current}: {error} (the limit for a page)") from None
            except BadContentEncoding as error:
                raise FetchFailed(Reason.BAD_CONTENT_ENCODING, f"{current}: {error}") from None
            except httpx.TransportError as error:
                raise verdict_for(error, urlsplit(current).netloc, policy) from None
            if not isinstance(decision, Redirect):
                if decision.verdict.retry_after is not None:
                    self.spacing.back_off((policy.run_id, urlsplit(current).netloc), decision.verdict.retry_after)
                raise decision.verdict
            hops.append(current)
            if len(hops) > MAX_REDIRECTS:
                raise FetchFailed(Reason.TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects from {url}")
            current = decision.target

    def _prepare(self, url: str, jar: CookieJar, policy: FetchPolicy, control: Control,
                 extra: list[tuple[bytes, bytes]]) -> httpx.Request:
        """robots.txt's verdict, this run's turn at the host, and the request with the jar's cookies."""
        control.check()
        if policy.obey_robots and not self.robots_allows(url, policy, control):
            raise FetchFailed(Reason.ROBOTS_DISALLOWED, f"robots.txt disallows {url}")
        self.spacing.wait_turn((policy.run_id, urlsplit(url).netloc), policy.per_host_delay, control)
        return self._request(url, policy, jar.header_for(url), extra)

    @staticmethod
    def _absorb(url: str, response: httpx.Response, jar: CookieJar, refused: list[tuple[str, str]]) -> None:
        """What a response teaches whatever comes next: its cookies join the child's jar (refusals are
        reported by name)."""
        for set_cookie in response.headers.get_list("set-cookie"):
            refusal = jar.store_set_cookie(url, set_cookie)
            if refusal is not None and len(refused) < MAX_REFUSED_COOKIES:
                refused.append(refusal)

    # ---- robots.txt --------------------------------------------------------------------------------
    def robots_cached(self, url: str) -> bool | None:
        """robots.txt's verdict from the cache alone (no request): None when not known yet."""
        return self.robots.cached(url)

    def robots_allows(self, url: str, policy: FetchPolicy, control: Control) -> bool:
        try:
            return self.robots.allows(url, policy.user_agent, lambda target: self._read_robots(target, policy, control))
        except RobotsUnavailable as unavailable:
            raise Verdict(Reason.ROBOTS_UNAVAILABLE, str(unavailable), retry_after=unavailable.retry_after) from None

    def _read_robots(self, target: str, policy: FetchPolicy, control: Control) -> RobotsAnswer:
        """One request for robots.txt, without cookies (it is public and must not learn the session)."""
        self.spacing.wait_turn((policy.run_id, urlsplit(target).netloc), policy.per_host_delay, control)
        try:
            with (tracing.step("GET robots.txt", {"url.full": tracing.safe_url(target)}) as hop,
                  control.request(policy.timeout), self._send(self._request(target, policy)) as response):
                status = response.status_code
                if hop is not None:
                    hop["http.response.status_code"] = status
                body = self._body(response, MAX_ROBOTS_BYTES, truncate=True) if 200 <= status < 300 else b""
                return RobotsAnswer(status, response.headers.get("location"), bytes(body))
        except BadContentEncoding:
            return RobotsAnswer(404)  # unreadable: as if there were none
        except (httpx.TimeoutException, httpx.ProtocolError, httpx.ReadError):
            return RobotsAnswer(unavailable=True)  # no full answer: like a 5xx
        except httpx.TransportError as error:
            # The host cannot be reached at all: say so (its pages would fail the same way).
            raise verdict_for(error, urlsplit(target).netloc, policy) from None

    # ---- requests ----------------------------------------------------------------------------------
    @staticmethod
    def _request(url: str, policy: FetchPolicy, cookie: str = "",
                 extra: list[tuple[bytes, bytes]] | None = None) -> httpx.Request:
        headers = [(b"User-Agent", policy.user_agent.encode("ascii", "replace")),
                   (b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
                   (b"Accept-Encoding", ACCEPT_ENCODING.encode())]
        if cookie:
            headers.append((b"Cookie", cookie.encode("ascii")))
        return httpx.Request("GET", url, headers=[*headers, *(extra or ())], extensions=request_extensions(policy))

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
