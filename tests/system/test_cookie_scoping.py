"""Cookie scoping through the whole system (CreateJobDefinition -> ExecuteJobDefinition -> real HTTP
sites): each stored cookie reaches exactly the requests a browser would send it with."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness, cookie
from quaero.testing.site import Response, html

APP, SUB, SIBLING, PARENT = "app.site.test", "sub.app.site.test", "other.site.test", "site.test"
LOOKALIKE_SUFFIX, LOOKALIKE_PREFIX = "app.site.test.evil.test", "notapp.site.test"


def names_sent_to(site: Any, host: str, path: str | None = None) -> set[str]:
    sent: set[str] = set()
    for request in site.requests_to(host):
        if path is None or request.path == path:
            sent |= request.cookie_names()
    return sent


def page_linking(*links: str) -> Response:
    return html("page", *links)


def test_a_link_to_another_host_gets_none_of_the_sites_cookies(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({(APP, "/"): page_linking(f"http://evil.test:{port}/x"),
                                ("evil.test", "/x"): html("elsewhere")})
    auth = harness.credentials([cookie("sid", "v1", APP)])
    result = harness.crawl([f"http://{APP}:{port}/"], auth, same_site_only=False)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert names_sent_to(site, APP, "/") == {"sid"}
    assert site.requests_to("evil.test") and names_sent_to(site, "evil.test") == set()


def test_a_redirect_chain_that_leaves_and_comes_back_sends_cookies_only_on_the_sites_hops(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({
        (APP, "/start"): Response(status=302, headers=[("Location", f"http://evil.test:{port}/hop")]),
        ("evil.test", "/hop"): Response(status=302, headers=[("Location", f"http://{APP}:{port}/back")]),
        (APP, "/back"): html("back home"),
    })
    auth = harness.credentials([cookie("sid", "v2", APP)])
    result = harness.crawl([f"http://{APP}:{port}/start"], auth)
    assert [d.final_url for d in result.documents] == [f"http://{APP}:{port}/back"]
    assert names_sent_to(site, APP, "/start") == {"sid"}
    assert names_sent_to(site, "evil.test") == set()
    assert names_sent_to(site, APP, "/back") == {"sid"}


def test_look_alike_hosts_get_nothing(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({
        (APP, "/"): page_linking(f"http://{LOOKALIKE_SUFFIX}:{port}/", f"http://{LOOKALIKE_PREFIX}:{port}/"),
        (LOOKALIKE_SUFFIX, "/"): html("suffix look-alike"), (LOOKALIKE_PREFIX, "/"): html("prefix look-alike")})
    auth = harness.credentials([cookie("host", "v3", APP), cookie("dom", "v3d", APP, include_subdomains=True)])
    harness.crawl([f"http://{APP}:{port}/"], auth, same_site_only=False)
    assert names_sent_to(site, APP) == {"host", "dom"}
    assert site.requests_to(LOOKALIKE_SUFFIX) and names_sent_to(site, LOOKALIKE_SUFFIX) == set()
    assert site.requests_to(LOOKALIKE_PREFIX) and names_sent_to(site, LOOKALIKE_PREFIX) == set()


def test_a_host_only_cookie_is_not_sent_to_a_subdomain_and_a_domain_cookie_is(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({(APP, "/"): page_linking(f"http://{SUB}:{port}/", f"http://{SIBLING}:{port}/",
                                                         f"http://{PARENT}:{port}/"),
                                (SUB, "/"): html("sub"), (SIBLING, "/"): html("sibling"), (PARENT, "/"): html("parent")})
    auth = harness.credentials([cookie("hostonly", "v4", APP), cookie("domain", "v4d", APP, include_subdomains=True)])
    harness.crawl([f"http://{APP}:{port}/"], auth)
    assert names_sent_to(site, APP) == {"hostonly", "domain"}
    assert names_sent_to(site, SUB) == {"domain"}
    assert site.requests_to(SIBLING) and names_sent_to(site, SIBLING) == set()
    assert site.requests_to(PARENT) and names_sent_to(site, PARENT) == set()


def test_paths_match_on_slash_boundaries(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({(APP, "/"): page_linking("/app", "/app/x", "/apple"),
                                (APP, "/app"): html("app"), (APP, "/app/x"): html("app x"), (APP, "/apple"): html("apple")})
    auth = harness.credentials([cookie("root", "r", APP), cookie("scoped", "s", APP, path="/app")])
    harness.crawl([f"http://{APP}:{port}/"], auth)
    assert names_sent_to(site, APP, "/") == {"root"}
    assert names_sent_to(site, APP, "/app") == {"root", "scoped"}
    assert names_sent_to(site, APP, "/app/x") == {"root", "scoped"}
    assert names_sent_to(site, APP, "/apple") == {"root"}


def test_expired_cookies_are_never_sent_and_session_cookies_are(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home")})
    past, future = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    auth = harness.credentials([cookie("old", "o", APP, expires=past), cookie("session", "s", APP),
                                cookie("fresh", "f", APP, expires=future)])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert names_sent_to(site, APP, "/") == {"session", "fresh"}


def test_when_every_cookie_has_expired_the_run_fails_auth_expired_without_fetching(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home")})
    auth = harness.credentials([cookie("old", "o", APP, expires=datetime.now(UTC) - timedelta(minutes=1))])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth)
    assert result.parent.status == jobs_pb2.JOB_STATUS_FAILED and result.parent.error_reason == "AUTH_EXPIRED"
    assert not result.children and not site.requests and not result.documents


def test_a_page_whose_cookies_expired_during_the_run_fails_auth_expired_without_fetching(
        harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home", "/later"), (APP, "/later"): html("later")})
    auth = harness.credentials([cookie("brief", "b", APP, expires=datetime.now(UTC) + timedelta(seconds=1.5))])
    result = harness.crawl([f"http://{APP}:{site.port}/"], auth, per_host_delay_seconds=2)
    by_path = {child.name.rsplit("/", 1)[1]: child for child in result.children}
    assert by_path[""].status == jobs_pb2.JOB_STATUS_COMPLETED
    assert by_path["later"].status == jobs_pb2.JOB_STATUS_FAILED and by_path["later"].error_reason == "AUTH_EXPIRED"
    assert not [r for r in site.requests if r.path == "/later"]


def test_robots_txt_is_fetched_without_cookies_and_logout_links_are_never_requested(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({
        (APP, "/"): page_linking("/logout", "/account/signout", "/?action=logout", "/log-out", "/ok"),
        (APP, "/ok"): html("ok"), (APP, "/robots.txt"): Response(body="User-agent: *\nAllow: /\n",
                                                                  content_type="text/plain")})
    auth = harness.credentials([cookie("sid", "v5", APP)])
    harness.crawl([f"http://{APP}:{port}/"], auth)
    robots = [r for r in site.requests if r.path == "/robots.txt"]
    assert robots and all(not r.cookie for r in robots)
    assert {r.path for r in site.requests} == {"/robots.txt", "/", "/ok"}


def test_cookies_a_site_sets_join_the_childs_jar_under_the_same_rules(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({
        (APP, "/"): Response(status=302, headers=[
            ("Location", f"http://{SUB}:{port}/after"), ("Set-Cookie", "fresh=1; Domain=app.site.test; Path=/"),
            ("Set-Cookie", "hostonly_new=1; Path=/"), ("Set-Cookie", "foreign=1; Domain=evil.test"),
            ("Set-Cookie", "suffix=1; Domain=test")]),
        (SUB, "/after"): html("after")})
    auth = harness.credentials([cookie("sid", "v6", APP)])
    result = harness.crawl([f"http://{APP}:{port}/"], auth)
    assert [d.final_url for d in result.documents] == [f"http://{SUB}:{port}/after"]
    # The next hop (a subdomain) gets the domain cookie the site just set, not its host-only one,
    # and cookies for another domain or a public suffix were never taken.
    assert names_sent_to(site, SUB, "/after") == {"fresh"}


def test_a_secure_cookie_goes_only_over_https_also_after_an_https_to_http_redirect(tls_harness: Any) -> None:
    plain = tls_harness.site({})
    secure = tls_harness.site({}, tls=tls_harness.tls_context)
    secure.handler.routes.update({
        (APP, "/"): Response(status=302, headers=[("Location", f"http://{APP}:{plain.port}/landing")])})
    plain.handler.routes.update({(APP, "/landing"): page_linking("/other"), (APP, "/other"): html("other")})
    auth = tls_harness.credentials([cookie("secure_sid", "s7", APP, secure=True), cookie("plain", "p7", APP)])
    result = tls_harness.crawl([f"https://{APP}:{secure.port}/"], auth)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, [c.error for c in result.children]
    assert names_sent_to(secure, APP, "/") == {"secure_sid", "plain"}
    assert names_sent_to(plain, APP, "/landing") == {"plain"}
    assert names_sent_to(plain, APP, "/other") == {"plain"}
