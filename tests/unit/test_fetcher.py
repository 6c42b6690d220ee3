"""The hop pipeline against httpx.MockTransport: the Cookie header each hop earns, redirects that end a
page, logged-out answers, Retry-After, bounded bodies, and robots.txt's cache and backoff."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from executor_service.crawl.control import Control
from executor_service.crawl.cookie_jar import CookieJar
from executor_service.crawl.fetcher import Fetcher, FetchPolicy
from executor_service.crawl.politeness import retry_after_seconds
from executor_service.crawl.verdicts import FetchFailed, LoggedOut, Verdict
from quaero.cookies import StoredCookie
from quaero.crawl_spec import DEFAULT_LOGGED_OUT_PATTERNS
from quaero.patterns import compile_all
from tests.support.hostile import gzipped_zeros

POLICY = FetchPolicy(obey_robots=False, logged_out=compile_all(DEFAULT_LOGGED_OUT_PATTERNS))


Answer = Any  # a function of the request that returns a fresh httpx.Response


def answer(status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
           html: str | None = None) -> Answer:
    """A response as a server sends it: a raw, unread stream (the fetcher reads and decodes it)."""
    if html is not None:
        body, headers = html.encode(), [("Content-Type", "text/html"), *(headers or [])]
    return lambda _request: httpx.Response(status, headers=headers or [], stream=httpx.ByteStream(body))


def fetcher_for(routes: dict[str, Answer], seen: list[httpx.Request] | None = None, clock: Any = None) -> Fetcher:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        respond = routes.get(str(request.url))
        return respond(request) if respond is not None else httpx.Response(404, stream=httpx.ByteStream(b""))
    return Fetcher(httpx.MockTransport(handle), clock=clock) if clock else Fetcher(httpx.MockTransport(handle))


def redirect(location: str, *cookies: str, status: int = 302) -> Answer:
    return answer(status, headers=[("Location", location), *[("Set-Cookie", c) for c in cookies]])


# ---- hops -----------------------------------------------------------------------------------------
def test_each_hop_gets_the_cookie_header_its_own_url_earns() -> None:
    seen: list[httpx.Request] = []
    fetcher = fetcher_for({
        "https://app.test/a": redirect("http://app.test/b", "fresh=1; Path=/"),
        "http://app.test/b": redirect("https://sub.app.test/c"),
        "https://sub.app.test/c": answer(html="<title>c</title>"),
    }, seen)
    jar = CookieJar([StoredCookie("host", "h", "app.test"), StoredCookie("dom", "d", "app.test", host_only=False),
                     StoredCookie("sec", "s", "app.test", secure=True)])
    result = fetcher.fetch("https://app.test/a", jar, POLICY)
    assert result.final_url == "https://sub.app.test/c" and result.hops == ["https://app.test/a", "http://app.test/b"]
    headers = [r.headers.get("cookie", "") for r in seen]
    assert headers == ["host=h; dom=d; sec=s", "host=h; dom=d; fresh=1", "dom=d"]


def test_a_request_never_carries_a_cookie_the_jar_did_not_give() -> None:
    seen: list[httpx.Request] = []
    fetcher = fetcher_for({"http://a.test/": answer(headers=[("Set-Cookie", "x=1")])}, seen)
    fetcher.fetch("http://a.test/", CookieJar(), POLICY)
    fetcher.fetch("http://a.test/", CookieJar(), POLICY)  # a new child: a new, empty jar
    assert [r.headers.get("cookie") for r in seen] == [None, None]


@pytest.mark.parametrize("location,reason", [
    ("javascript:alert(1)", "BAD_REDIRECT"), ("data:text/html,hi", "BAD_REDIRECT"), ("http://[::1", "BAD_REDIRECT"),
    ("/" + "x" * 5000, "BAD_REDIRECT"), ("/users/sign_in", "AUTH_EXPIRED"), ("/login?next=/", "AUTH_EXPIRED"),
    ("/logout", "LOGOUT_REDIRECT")])
def test_a_redirect_target_that_cannot_be_followed_ends_the_page(location: str, reason: str) -> None:
    fetcher = fetcher_for({"http://a.test/": redirect(location)})
    with pytest.raises(Verdict) as caught:
        fetcher.fetch("http://a.test/", CookieJar(), POLICY)
    assert caught.value.reason == reason and caught.value.retry_after is None


def test_redirects_stop_after_ten_hops() -> None:
    routes = {f"http://a.test/{n}": redirect(f"/{n + 1}") for n in range(20)}
    with pytest.raises(FetchFailed) as caught:
        fetcher_for(routes).fetch("http://a.test/0", CookieJar(), POLICY)
    assert caught.value.reason == "TOO_MANY_REDIRECTS"


@pytest.mark.parametrize("status,reason", [(401, "AUTH_REJECTED"), (403, "AUTH_REJECTED")])
def test_401_and_403_mean_logged_out(status: int, reason: str) -> None:
    with pytest.raises(LoggedOut) as caught:
        fetcher_for({"http://a.test/": answer(status)}).fetch("http://a.test/", CookieJar(), POLICY)
    assert caught.value.reason == reason


@pytest.mark.parametrize("status,header,reason,after", [
    (429, "7", "RATE_LIMITED", 7.0), (503, "", "SERVER_UNAVAILABLE", 5.0), (429, "9999", "RATE_LIMITED", 60.0),
    (429, "nonsense", "RATE_LIMITED", 5.0)])
def test_429_and_503_ask_for_a_retry_after_the_servers_delay(status: int, header: str, reason: str,
                                                            after: float) -> None:
    busy = answer(status, headers=[("Retry-After", header)] if header else [])
    with pytest.raises(Verdict) as caught:
        fetcher_for({"http://a.test/": busy}).fetch("http://a.test/", CookieJar(), POLICY)
    assert caught.value.reason == reason and caught.value.retry_after == after


def test_retry_after_accepts_an_http_date_and_refuses_nan() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= (retry_after_seconds(soon) or 0) <= 31
    assert retry_after_seconds("nan") is None and retry_after_seconds("-5") == 0.0


def test_a_gzip_bomb_fails_body_too_large_and_a_bad_encoding_bad_content_encoding() -> None:
    bomb = answer(body=gzipped_zeros(64 * 1024 * 1024), headers=[("Content-Encoding", "gzip"),
                                                                  ("Content-Type", "text/html")])
    with pytest.raises(FetchFailed) as caught:
        fetcher_for({"http://a.test/": bomb}).fetch("http://a.test/", CookieJar(), POLICY)
    assert caught.value.reason == "BODY_TOO_LARGE"
    odd = answer(body=b"x", headers=[("Content-Encoding", "zstd")])
    with pytest.raises(FetchFailed) as caught:
        fetcher_for({"http://a.test/": odd}).fetch("http://a.test/", CookieJar(), POLICY)
    assert caught.value.reason == "BAD_CONTENT_ENCODING"


def test_a_cancelled_child_makes_no_request() -> None:
    seen: list[httpx.Request] = []
    control = Control()
    control.cancel("cancelled by request")
    with pytest.raises(httpx.TransportError):
        fetcher_for({"http://a.test/": answer()}, seen).fetch("http://a.test/", CookieJar(), POLICY, control)
    assert seen == []


# ---- robots.txt ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_robots_5xx_backs_off_longer_each_time_then_reads_the_rules() -> None:
    answers = [answer(503)] * 3 + [answer(body=b"User-agent: *\nDisallow: /no\n")]
    clock = Clock()
    seen: list[httpx.Request] = []
    fetcher = fetcher_for({"http://a.test/robots.txt": lambda request: answers.pop(0)(request)}, seen, clock)
    policy = FetchPolicy(obey_robots=True)
    waits = []
    for _ in range(3):
        with pytest.raises(Verdict) as caught:
            fetcher.robots_allows("http://a.test/page", policy, Control())
        assert caught.value.reason == "ROBOTS_UNAVAILABLE"
        waits.append(caught.value.retry_after)
        with pytest.raises(Verdict):  # within the backoff: no new request
            fetcher.robots_allows("http://a.test/page", policy, Control())
        clock.now += (caught.value.retry_after or 0) + 0.01
    assert waits == [0.5, 1.0, 2.0] and len(seen) == 3
    assert fetcher.robots_allows("http://a.test/page", policy, Control())
    assert not fetcher.robots_allows("http://a.test/no", policy, Control())
    assert fetcher.robots_cached("http://a.test/no") is False and len(seen) == 4
    assert fetcher.robots_cached("http://other.test/") is None


def test_robots_4xx_allows_all_and_robots_requests_carry_no_cookie() -> None:
    seen: list[httpx.Request] = []
    fetcher = fetcher_for({"http://a.test/robots.txt": answer(401), "http://a.test/": answer(html="<title>x</title>")},
                          seen)
    jar = CookieJar([StoredCookie("sid", "s", "a.test")])
    fetcher.fetch("http://a.test/", jar, FetchPolicy(obey_robots=True))
    assert [(r.url.path, r.headers.get("cookie")) for r in seen] == [("/robots.txt", None), ("/", "sid=s")]
