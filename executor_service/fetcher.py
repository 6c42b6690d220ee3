"""HTTP for the crawl: GET only, redirects followed here (at most 10 hops, cookies recomputed per hop),
robots.txt fetched without cookies, per-host spacing and Retry-After, logged-out detection.
Knows nothing of gRPC."""
from __future__ import annotations

import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from .cookie_jar import CookieJar
from .pages import is_logout_link, normalise_url

MAX_REDIRECTS = 10
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RETRY_AFTER_SECONDS = 60.0
ROBOTS_TTL_SECONDS = 3600.0  # robots.txt is read again after an hour, as crawlers commonly do
REDIRECT_CODES = {301, 302, 303, 307, 308}
DEFAULT_LOGGED_OUT_PATTERNS = [r"(?i)log[-_]?in", r"(?i)sign[-_]?in"]
DEFAULT_USER_AGENT = "quaero/0.1 (+https://quaero.dev/bot)"


class LoggedOut(Exception):
    """The site treated the request as logged out: AUTH_EXPIRED (login redirect, expired cookies) or
    AUTH_REJECTED (401/403). Not retried; the page is not stored."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class FetchFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FetchResult:
    url: str
    final_url: str
    status_code: int
    content_type: str
    body: bytes
    text: str
    hops: list[str] = field(default_factory=list)


class ResolvingTransport(httpx.BaseTransport):
    """Sends requests for mapped host names to fixed addresses (like curl --resolve), keeping the Host
    header and the TLS server name, so a local test site can answer for several host names."""

    def __init__(self, mapping: dict[str, str], verify: ssl.SSLContext | bool) -> None:
        self._inner = httpx.HTTPTransport(verify=verify, retries=1)
        self._mapping = mapping

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = self._mapping.get(request.url.host)
        if address:
            request.extensions = {**request.extensions, "sni_hostname": request.url.host}
            request.url = request.url.copy_with(host=address)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


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
    """Spaces requests to one host by a delay and honours Retry-After, across all worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait_turn(self, host: str, delay: float) -> None:
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next.get(host, 0.0))
            self._next[host] = turn + delay
        if turn > now:
            time.sleep(turn - now)

    def back_off(self, host: str, seconds: float) -> None:
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclass
class FetchPolicy:
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0
    per_host_delay: float = 0.0
    obey_robots: bool = True
    logged_out_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_LOGGED_OUT_PATTERNS))


class Fetcher:
    def __init__(self, resolve: dict[str, str] | None = None, ca_bundle: str | None = None) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self.client = httpx.Client(transport=ResolvingTransport(resolve or {}, verify), follow_redirects=False,
                                   trust_env=False, limits=httpx.Limits(max_connections=256,
                                                                        max_keepalive_connections=64))
        self.spacing = HostSpacing()
        self._robots: dict[str, tuple[float, RobotFileParser]] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def robots_allows(self, url: str, policy: FetchPolicy) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            cached = self._robots.get(origin)
        parser = cached[1] if cached and time.monotonic() - cached[0] < ROBOTS_TTL_SECONDS else None
        if parser is None:
            parser = RobotFileParser()
            try:
                # Fetched without cookies: robots.txt is public and must not learn the session.
                response = self.client.get(origin + "/robots.txt", headers={"User-Agent": policy.user_agent},
                                           timeout=policy.timeout)
                if response.status_code >= 500:
                    parser.disallow_all = True  # type: ignore[attr-defined]  # RFC 9309: unreachable = disallow
                elif response.status_code >= 400:
                    parser.allow_all = True  # type: ignore[attr-defined]
                else:
                    parser.parse(response.text.splitlines())
            except httpx.HTTPError as error:
                # The host did not answer at all: say so, rather than "robots.txt disallows it".
                raise FetchFailed("FETCH_FAILED", f"cannot reach {origin}: {type(error).__name__}") from None
            with self._robots_lock:
                self._robots[origin] = (time.monotonic(), parser)
        return parser.can_fetch(policy.user_agent, url)

    def fetch(self, url: str, jar: CookieJar, policy: FetchPolicy) -> FetchResult:
        patterns = [re.compile(p) for p in policy.logged_out_patterns]
        current = url
        hops: list[str] = []
        retries = 0
        while True:
            if policy.obey_robots and not self.robots_allows(current, policy):
                raise FetchFailed("ROBOTS_DISALLOWED", f"robots.txt disallows {current}")
            host = urlsplit(current).netloc
            self.spacing.wait_turn(host, policy.per_host_delay)
            headers = {"User-Agent": policy.user_agent, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
            cookie_header = jar.header_for(current)
            if cookie_header:
                headers["Cookie"] = cookie_header
            try:
                with self.client.stream("GET", current, headers=headers, timeout=policy.timeout) as response:
                    body = _read_capped(response)
            except httpx.TimeoutException:
                raise FetchFailed("FETCH_TIMEOUT", f"no answer from {host} within {policy.timeout:g} s") from None
            except httpx.HTTPError as error:
                raise FetchFailed("FETCH_FAILED", f"cannot fetch {current}: {type(error).__name__}") from None
            for set_cookie in response.headers.get_list("set-cookie"):
                jar.store_set_cookie(current, set_cookie)
            status = response.status_code
            if status in (429, 503) and retries < 3:
                wait = _retry_after_seconds(response.headers.get("retry-after"))
                if wait is not None:
                    retries += 1
                    self.spacing.back_off(host, wait)
                    continue
            if status in REDIRECT_CODES and response.headers.get("location"):
                target = normalise_url(response.headers["location"], current)
                if target is None:
                    raise FetchFailed("BAD_REDIRECT", f"{current} redirects to a URL that is not http(s)")
                path = urlsplit(target).path
                if any(p.search(path) for p in patterns):
                    raise LoggedOut("AUTH_EXPIRED", f"not authenticated: {current} redirected to the login page "
                                    f"{path}; the session has expired or was logged out; import fresh cookies")
                if is_logout_link(target):
                    raise FetchFailed("LOGOUT_REDIRECT", f"{current} redirects to a logout URL; not followed")
                hops.append(current)
                if len(hops) > MAX_REDIRECTS:
                    raise FetchFailed("TOO_MANY_REDIRECTS", f"more than {MAX_REDIRECTS} redirects from {url}")
                current = target
                continue
            if status in (401, 403):
                raise LoggedOut("AUTH_REJECTED", f"not authenticated: {current} answered {status}; the site "
                                "refused the stored session")
            content_type = response.headers.get("content-type", "")
            text = ""
            if "html" in content_type or content_type.startswith("text/"):
                text = body.decode(response.encoding or "utf-8", errors="replace")
            return FetchResult(url=url, final_url=current, status_code=status, content_type=content_type,
                               body=body, text=text, hops=hops)


def _read_capped(response: httpx.Response) -> bytes:
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
        chunks.append(chunk)
    return b"".join(chunks)
