"""What a crawl follows and how politely: scope rules, depth, patterns, per-host spacing, Retry-After,
the redirect limit, and documents upserted by URL across runs."""
from __future__ import annotations

import time

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Request, Response, html

APP, OTHER_SITE = "app.site.test", "evil.test"


def test_same_site_only_keeps_the_crawl_on_the_start_urls_site(harness: CrawlHarness) -> None:
    site = harness.site({})
    port = site.port
    site.handler.routes.update({(APP, "/"): html("home", f"http://other.site.test:{port}/", f"http://{OTHER_SITE}:{port}/"),
                                ("other.site.test", "/"): html("same site"), (OTHER_SITE, "/"): html("elsewhere")})
    result = harness.crawl([f"http://{APP}:{port}/"])
    assert sorted(d.title for d in result.documents) == ["home", "same site"]
    assert not site.requests_to(OTHER_SITE)


def test_max_depth_and_url_patterns_limit_what_is_followed(harness: CrawlHarness) -> None:
    site = harness.site({})
    routes = site.handler.routes
    routes[(APP, "/")] = html("0", "/d1", "/skip/me", "/file.pdf")
    routes[(APP, "/d1")] = html("1", "/d2")
    routes[(APP, "/d2")] = html("2", "/d3")
    routes[(APP, "/d3")] = html("3")
    result = harness.crawl([f"http://{APP}:{site.port}/"], max_depth=2, exclude_patterns=[r"\.pdf$"],
                           include_patterns=[r"/(d\d)?$", r"/skip/"], same_site_only=True)
    titles = sorted(d.title for d in result.documents)
    assert "3" not in titles and {"0", "1", "2"} <= set(titles)
    assert not [r for r in site.requests if r.path in ("/d3", "/file.pdf")]
    depths = {c.name.rsplit("/", 1)[1]: c.depth for c in result.children}
    assert depths["d2"] == 2


def test_requests_to_one_host_are_spaced_by_the_delay(harness: CrawlHarness) -> None:
    stamps: list[float] = []

    def timed(request: Request) -> Response:
        stamps.append(time.monotonic())
        return html(request.path)

    site = harness.site({(APP, "/"): html("home", *[f"/p{n}" for n in range(5)])})
    for n in range(5):
        site.handler.routes[(APP, f"/p{n}")] = timed
    harness.crawl([f"http://{APP}:{site.port}/"], per_host_delay_seconds=0.2, concurrency=4)
    stamps.sort()
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]
    # Requests are scheduled 0.2 s apart; arrival jitters a little on a loaded machine. Without the
    # delay the four workers would send them all at once.
    assert len(stamps) == 5 and min(gaps) >= 0.1 and sorted(gaps)[len(gaps) // 2] >= 0.17, gaps


def test_retry_after_is_honoured(harness: CrawlHarness) -> None:
    stamps: list[float] = []

    def busy_once(_request: Request) -> Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return Response(status=429, headers=[("Retry-After", "1")], body="slow down")
        return html("finally")

    site = harness.site({(APP, "/busy"): busy_once})
    result = harness.crawl([f"http://{APP}:{site.port}/busy"])
    assert [d.title for d in result.documents] == ["finally"]
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.95


def test_a_redirect_loop_stops_after_ten_hops(harness: CrawlHarness) -> None:
    site = harness.site({})
    for n in range(20):
        site.handler.routes[(APP, f"/r{n}")] = Response(status=302, headers=[("Location", f"/r{n + 1}")])
    result = harness.crawl([f"http://{APP}:{site.port}/r0"], max_child_failures=1)
    child = result.children[0]
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "TOO_MANY_REDIRECTS"
    assert len([r for r in site.requests if r.path != "/robots.txt"]) == 11  # the first request + 10 hops
