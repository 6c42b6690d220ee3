"""Fast tests of the pure rules: the hop logic against httpx.MockTransport, the cookie jar, robots.txt
matching, bounded decompression, URL normal form and the network policy."""
from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from executor_service.crawl.content import BadContentEncoding, BodyTooLarge, decode_text, read_body
from executor_service.crawl.control import Control
from executor_service.crawl.cookie_jar import CookieJar
from executor_service.crawl.fetcher import DEFAULT_LOGGED_OUT_PATTERNS, Fetcher, FetchPolicy
from executor_service.crawl.politeness import retry_after_seconds
from executor_service.crawl.robots import RobotsRules
from executor_service.crawl.verdicts import FetchFailed, LoggedOut, Verdict
from quaero.cookies import StoredCookie
from quaero.network_policy import NetworkPolicy, parse_networks
from quaero.patterns import compile_all
from quaero.urls import normalise_url
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
    assert waits == [1.0, 2.0, 4.0] and len(seen) == 3
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


@pytest.mark.parametrize("rules,url,allowed", [
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/b/c", True),
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/x", False),
    ("User-agent: *\nAllow: /p\nDisallow: /p\n", "/p", True),  # a tie: Allow wins
    ("User-agent: *\nDisallow: /*.gif$\n", "/x.gif", False),
    ("User-agent: *\nDisallow: /*.gif$\n", "/x.gif?y", True),
    ("User-agent: *\nDisallow: /\n\nUser-agent: Quaero\nAllow: /\n", "/any", True),  # our group, case-insensitive
    ("User-agent: quaero\nUser-agent: other\nDisallow: /both\n", "/both/x", False),  # a group of two agents
    ("Disallow: /orphan\nUser-agent: *\nDisallow:\n", "/orphan", True),  # a rule outside any group
    ("User-agent: *\nDisallow: /caf%C3%A9\n", "/caf%C3%A9/menu", False),
    ("User-agent: *\nDisallow: /café\n", "/caf%C3%A9", False),  # patterns are percent-encoded like URLs
    ("User-agent: *\nDisallow: /\n", "/robots.txt", True),
])
def test_robots_rules_follow_rfc_9309(rules: str, url: str, allowed: bool) -> None:
    assert RobotsRules.parse(rules, "quaero/0.1").allows("http://a.test" + url) is allowed


def test_robots_matching_is_linear_whatever_the_patterns() -> None:
    rules = RobotsRules.parse("User-agent: *\n" + "Disallow: /*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b\n" * 50, "q")
    assert rules.allows("http://a.test/" + "a" * 20000)


# ---- the jar ----------------------------------------------------------------------------------------
def test_the_jar_keeps_at_most_180_cookies_per_site_evicting_the_least_recently_used() -> None:
    jar = CookieJar([StoredCookie("sid", "s", "app.test")])
    jar.header_for("http://app.test/")
    for n in range(179):
        assert jar.store_set_cookie("http://app.test/", f"c{n}=v") is None
    jar.header_for("http://app.test/")  # everything just used
    jar.store_set_cookie("http://app.test/", "newest=1")
    names = [c.name for c in jar.cookies_for("http://app.test/")]
    assert len(names) == 180 and "newest" in names
    for n in range(500):
        jar.store_set_cookie("http://other.app.test/", f"o{n}=v; Domain=app.test")
    assert len(jar) == 180


def test_secure_cookies_are_left_alone_by_http() -> None:
    jar = CookieJar([StoredCookie("sid", "orig", "app.test", secure=True)])
    assert jar.store_set_cookie("http://app.test/", "sid=evil")
    assert jar.store_set_cookie("http://app.test/x", "sid=evil; Path=/x")
    assert jar.store_set_cookie("http://app.test/", "new=1; Secure")
    assert jar.store_set_cookie("https://app.test/", "sid=replaced; Secure") is None
    assert jar.header_for("https://app.test/") == "sid=replaced"


def test_trailing_dot_hosts_are_other_hosts() -> None:
    jar = CookieJar([StoredCookie("a", "1", "app.test"), StoredCookie("b", "2", "app.test", host_only=False)])
    assert jar.header_for("http://app.test./") == ""
    assert jar.store_set_cookie("http://app.test./", "c=3") is None
    assert jar.header_for("http://app.test/") == "a=1; b=2" and jar.header_for("http://app.test./") == "c=3"


def test_expiry_is_clamped_to_400_days_and_never_overflows() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    jar = CookieJar()
    for header in ("a=1; Max-Age=999999999999", "b=1; Expires=Fri, 31 Dec 9999 23:59:59 GMT",
                   "c=1; Expires=not a date", "d=1; Max-Age=-99999999999999999999"):
        assert jar.store_set_cookie("http://a.test/", header, received_at=now) is None
    expiries = {c.name: c.expires for c in jar.cookies_for("http://a.test/", at=now)}
    assert expiries == {"a": now + timedelta(days=400), "b": now + timedelta(days=400), "c": None}


@pytest.mark.parametrize("header", ["u=caf\u00e9", "s=two words", 'q="a,b"', "b=back\\slash", "x=" + "v" * 5000,
                                    "=nameless", "sp ace=1"])
def test_values_and_names_outside_rfc_6265_are_refused_by_name(header: str) -> None:
    jar = CookieJar()
    refused = jar.store_set_cookie("http://a.test/", header)
    assert refused is not None and len(jar) == 0
    name, reason = refused
    assert header.split("=", 1)[1][:20] not in reason or header.split("=", 1)[1] == ""


# ---- bodies, URLs, addresses --------------------------------------------------------------------------
def test_decompression_stops_at_the_cap() -> None:
    bomb = gzipped_zeros(50 * 1024 * 1024)
    with pytest.raises(BodyTooLarge):
        read_body([bomb[i:i + 8192] for i in range(0, len(bomb), 8192)], "gzip", limit=1024 * 1024)
    assert len(read_body([bomb], "gzip", limit=1000, truncate=True)) == 1000
    assert read_body([gzip.compress(b"a") + gzip.compress(b"b")], "x-gzip") == b"ab"
    assert read_body([zlib.compress(b"z")[2:-4]], "deflate") == b"z"  # raw deflate, as some servers send
    with pytest.raises(BadContentEncoding):
        read_body([b"plain"], "gzip")


def test_text_is_decoded_as_a_browser_would() -> None:
    assert decode_text("é".encode("latin-1"), "text/html; charset=ISO-8859-1") == "é"
    assert decode_text(b'<meta charset="windows-1252">\x93', "text/html") == '<meta charset="windows-1252">\u201c'
    assert decode_text(b"\xff", "text/plain; charset=rot13") == "\ufffd"


@pytest.mark.parametrize("url,expected", [
    ("HTTP://Example.COM:80/a b?q=é#frag", "http://example.com/a%20b?q=%C3%A9"),
    ("https://bücher.example/", "https://xn--bcher-kva.example/"),
    ("http://user:secret@example.com/", "http://example.com/"),
    ("http://example.com./", "http://example.com./"),
    ("http://[::1]:8080", "http://[::1]:8080/"),
    ("javascript:alert(1)", None), ("data:,x", None), ("http://exa mple.com/", None), ("http://a.test:99999/", None),
    ("http://a.test/" + "x" * 5000, None)])
def test_urls_have_one_normal_form(url: str, expected: str | None) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("address,refused", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.1", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.0.0.1", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "reserved"), ("224.0.0.1", "multicast"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:7f00:1::", "loopback")])
def test_the_network_policy_names_what_it_refuses(address: str, refused: str | None) -> None:
    assert NetworkPolicy().refusal(address) == refused
    assert NetworkPolicy(allow_private=True).refusal(address) is None


def test_allowed_networks_open_exactly_those_networks() -> None:
    policy = NetworkPolicy(allowed=parse_networks(["10.20.0.0/16", "::1/128"]))
    assert policy.refusal("10.20.3.4") is None and policy.refusal("::1") is None
    assert policy.refusal("10.21.0.1") == "private" and policy.refusal("127.0.0.1") == "loopback"
