"""No Cookie header comes from anywhere but the child's own jar, and nothing a site sets escapes its
child: not to robots.txt, not to a later run, not to another scheme, host spelling or bare address.
Requests reach the sites by mapped names, by IP literal and over TLS."""
from __future__ import annotations

from typing import Any

from quaero.api.manager.v1 import jobs_pb2
from quaero.convert import struct_to_dict
from quaero.testing.harness import CrawlHarness, cookie
from quaero.testing.site import Request, Response, html

APP, SUB = "app.site.test", "sub.app.site.test"


def cookie_headers(site: Any, host: str | None = None, path: str | None = None) -> list[str]:
    return [r.cookie for r in site.requests if (host is None or r.host == host) and (path is None or r.path == path)]


def test_a_logged_out_run_never_sends_what_an_earlier_run_was_given(harness: CrawlHarness) -> None:
    given = iter(range(1, 100))

    def home(_request: Request) -> Response:
        return Response(body="<title>home</title><a href='/next'>n</a>",
                        headers=[("Set-Cookie", f"tracker=run-{next(given)}; Path=/; Max-Age=3600")])

    site = harness.site({(APP, "/"): home, (APP, "/next"): html("next")})
    first = harness.crawl([f"http://{APP}:{site.port}/"])
    assert first.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    # The run is one session: /next, another child of the same run, is sent what / was given.
    assert cookie_headers(site, APP, "/next") == ["tracker=run-1"]
    before = len(site.requests)
    second = harness.crawl([f"http://{APP}:{site.port}/"])
    assert second.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    # The next run starts with nothing of the first one's session, and has its own.
    assert [(r.path, r.cookie) for r in site.requests[before:] if r.path != "/robots.txt"] == [
        ("/", ""), ("/next", "tracker=run-2")]


def test_robots_txt_gets_no_cookie_even_where_the_childs_jar_has_one(harness: CrawlHarness) -> None:
    other = harness.site({(APP, "/landing"): html("landing")})
    site = harness.site({(APP, "/"): Response(status=302, headers=[
        ("Set-Cookie", "fresh=given; Path=/"), ("Location", f"http://{APP}:{other.port}/landing")])})
    auth = harness.credentials([cookie("sid", "stored", APP)])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth)
    assert [d.title for d in result.documents] == ["landing"]
    # Cookies are not port-specific: the next hop (another port, same host) carries both cookies, as
    # in a browser; that port's robots.txt, fetched in between, carries none.
    [landing] = cookie_headers(other, APP, "/landing")
    assert sorted(part.strip() for part in landing.split(";")) == ["fresh=given", "sid=stored"]
    assert cookie_headers(other, APP, "/robots.txt") == [""]
    assert cookie_headers(site, APP, "/robots.txt") == [""]


def test_cookies_of_a_named_host_never_reach_its_bare_address(harness: CrawlHarness) -> None:
    site = harness.site({})
    site.handler.routes.update({
        (APP, "/"): Response(status=302, headers=[("Set-Cookie", "named=1; Path=/"),
                                                  ("Location", f"http://127.0.0.1:{site.port}/bare")]),
        ("127.0.0.1", "/bare"): html("bare address")})
    auth = harness.credentials([cookie("sid", "named-only", APP), cookie("dom", "named-domain", APP, include_subdomains=True)])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth, same_site_only=False)
    assert [d.title for d in result.documents] == ["bare address"]
    assert cookie_headers(site, "127.0.0.1") == ["", ""]  # robots.txt and the page
    assert "sid=named-only" in cookie_headers(site, APP, "/")[0]


def test_a_trailing_dot_host_is_another_host(harness: CrawlHarness) -> None:
    site = harness.site({})
    site.handler.routes.update({(APP, "/"): html("home", f"http://{APP}.:{site.port}/dotted"),
                                (APP + ".", "/dotted"): html("dotted")})
    auth = harness.credentials([cookie("sid", "undotted", APP), cookie("dom", "undotted-domain", APP, include_subdomains=True)])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth)
    assert sorted(d.title for d in result.documents) == ["dotted", "home"]
    assert cookie_headers(site, APP + ".", "/dotted") == [""]
    assert "sid=undotted" in cookie_headers(site, APP, "/")[0]


def test_a_flood_of_set_cookie_headers_leaves_at_most_180_cookies(harness: CrawlHarness) -> None:
    flood = [("Set-Cookie", f"c{n}=v{n}; Path=/") for n in range(1000)]
    site = harness.site({(APP, "/"): Response(status=302, headers=[*flood, ("Location", "/after")]),
                         (APP, "/after"): html("after")})
    result = harness.crawl([f"http://{APP}:{site.port}/"], harness.credentials([cookie("sid", "s", APP)]))
    assert [d.title for d in result.documents] == ["after"]
    [sent] = cookie_headers(site, APP, "/after")
    names = [part.split("=")[0].strip() for part in sent.split(";")]
    assert 150 <= len(names) <= 180 and len(set(names)) == len(names)


def test_odd_set_cookie_headers_cost_nothing_and_are_reported_by_name(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): Response(status=302, headers=[
        ("Set-Cookie", "forever=1; Path=/; Max-Age=999999999999"),
        ("Set-Cookie", "ancient=1; Path=/; Expires=Fri, 01 Jan 99999 00:00:00 GMT"),
        ("Set-Cookie", "unicode=caf\u00e9-secret; Path=/"),
        ("Set-Cookie", "spaced=two words; Path=/"),
        ("Set-Cookie", "secure_over_http=1; Path=/; Secure"),
        ("Location", "/after")]), (APP, "/after"): html("after")})
    result = harness.crawl([f"http://{APP}:{site.port}/"])
    [child] = result.children
    assert child.status == jobs_pb2.JOB_STATUS_COMPLETED, child.error
    [sent] = cookie_headers(site, APP, "/after")
    assert sorted(part.split("=")[0].strip() for part in sent.split(";")) == ["ancient", "forever"]
    refused = {item["name"]: item["reason"] for item in struct_to_dict(child.result)["refused_cookies"]}
    assert set(refused) == {"unicode", "spaced", "secure_over_http"}
    assert "https" in refused["secure_over_http"]
    assert "secret" not in str(refused) and "two words" not in str(refused)


def test_an_http_response_cannot_set_or_replace_a_secure_cookie(tls_harness: Any) -> None:
    plain = tls_harness.site({})
    secure = tls_harness.site({}, tls=tls_harness.tls_context)
    secure.handler.routes.update({
        (APP, "/start"): Response(status=302, headers=[("Location", f"http://{APP}:{plain.port}/set")]),
        (APP, "/end"): html("end")})
    plain.handler.routes.update({(APP, "/set"): Response(status=302, headers=[
        ("Set-Cookie", "sid=from-http; Path=/"), ("Set-Cookie", "planted=1; Path=/; Secure"),
        ("Location", f"https://{APP}:{secure.port}/end")])})
    auth = tls_harness.credentials([cookie("sid", "original", APP, secure=True)])
    result = tls_harness.crawl([f"https://{APP}:{secure.port}/start"], auth)
    assert [d.title for d in result.documents] == ["end"], [c.error for c in result.children]
    assert cookie_headers(secure, APP, "/start") == ["sid=original"]
    assert cookie_headers(plain, APP, "/set") == [""]  # a Secure cookie never goes over http
    assert cookie_headers(secure, APP, "/end") == ["sid=original"]
    refused = {item["name"] for item in struct_to_dict(result.children[0].result)["refused_cookies"]}
    assert refused == {"sid", "planted"}
