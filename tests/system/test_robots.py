"""robots.txt per RFC 9309, as a site may serve it: rules with wildcards, redirects, 4xx (allow all),
5xx and timeouts (try again after a growing backoff; never an empty 'completed' run), and bombs."""
from __future__ import annotations

import time
from typing import Any

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Request, Response, html
from tests.support.hostile import gzip_bomb, silent

APP = "app.site.test"
OTHER = "other.site.test"


def text(body: str) -> Response:
    return Response(body=body, content_type="text/plain")


def paths(site: Any, host: str = APP) -> list[str]:
    return [r.path for r in site.requests_to(host)]


def test_a_robots_txt_503_once_is_asked_again_and_the_run_is_crawled(harness: CrawlHarness) -> None:
    answers = iter([Response(status=503, body="busy")])

    def robots(_request: Request) -> Response:
        return next(answers, text("User-agent: *\nDisallow: /private\n"))

    site = harness.site({(APP, "/robots.txt"): robots, (APP, "/"): html("home", "/a", "/private"),
                         (APP, "/a"): html("a"), (APP, "/private"): html("private")})
    result = harness.crawl([f"http://{APP}:{site.port}/"])
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert sorted(d.title for d in result.documents) == ["a", "home"]
    assert paths(site).count("/robots.txt") == 2 and "/private" not in paths(site)
    home = next(c for c in result.children if c.depth == 0)
    assert home.attempts == 2 and home.error_reason == ""


def test_robots_txt_that_never_answers_fails_the_page_robots_unavailable_after_retries(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/robots.txt"): Response(status=500, body="down"), (APP, "/"): html("home")})
    started = time.monotonic()
    result = harness.crawl([f"http://{APP}:{site.port}/"], max_child_failures=1)
    [child] = result.children
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "ROBOTS_UNAVAILABLE"
    assert child.attempts == 4 and "gave up after 4 attempts" in child.error
    assert paths(site) == ["/robots.txt"] * 4, "the page itself must not be fetched"
    assert time.monotonic() - started < 15  # backoff 0.5 + 1 + 2 s between the four attempts


def test_a_silent_robots_txt_costs_the_timeout_and_is_retried(harness: CrawlHarness) -> None:
    calls: list[float] = []

    def robots(_request: Request) -> Response:
        calls.append(time.monotonic())
        return silent(max_seconds=30) if len(calls) == 1 else text("User-agent: *\nAllow: /\n")

    site = harness.site({(APP, "/robots.txt"): robots, (APP, "/"): html("home")})
    result = harness.crawl([f"http://{APP}:{site.port}/"], request_timeout_seconds=1)
    assert [d.title for d in result.documents] == ["home"] and len(calls) == 2


def test_rules_use_wildcards_and_the_most_specific_match(harness: CrawlHarness) -> None:
    rules = ("User-agent: somebot\nDisallow: /\n\n"
             "User-agent: *\nDisallow: /*.pdf$\nDisallow: /docs/\nAllow: /docs/public/\nDisallow: /search?*q=\n")
    links = ["/file.pdf", "/file.pdf?download=1", "/docs/secret", "/docs/public/a", "/search?x=1&q=2", "/free"]
    site = harness.site({(APP, "/robots.txt"): text(rules), (APP, "/"): html("home", *links)})
    for link in links:
        site.handler.routes[(APP, link.split("?")[0])] = html(link)
    result = harness.crawl([f"http://{APP}:{site.port}/"], max_depth=1)
    fetched = {r.path + ("?" + r.query if r.query else "") for r in site.requests} - {"/robots.txt", "/"}
    assert fetched == {"/file.pdf?download=1", "/docs/public/a", "/free"}
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED


def test_4xx_allows_everything_and_a_redirect_is_followed(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/robots.txt"): Response(status=403)})
    port = site.port
    site.handler.routes.update({
        (APP, "/"): html("home", f"http://{OTHER}:{port}/blocked", f"http://{OTHER}:{port}/open"),
        (OTHER, "/robots.txt"): Response(status=301, headers=[("Location", "/real-robots.txt")]),
        (OTHER, "/real-robots.txt"): text("User-agent: *\nDisallow: /blocked\n"),
        (OTHER, "/open"): html("open"), (OTHER, "/blocked"): html("blocked")})
    result = harness.crawl([f"http://{APP}:{port}/"], max_depth=1)
    assert sorted(d.title for d in result.documents) == ["home", "open"]
    assert "/blocked" not in paths(site, OTHER)


def test_a_robots_txt_bomb_is_read_up_to_500_kib(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/robots.txt"): gzip_bomb(200 * 1024 * 1024, "text/plain"), (APP, "/"): html("home")})
    result = harness.crawl([f"http://{APP}:{site.port}/"])
    assert [d.title for d in result.documents] == ["home"]


def test_a_slow_robots_txt_elsewhere_does_not_hold_up_the_page_that_links_there(harness: CrawlHarness) -> None:
    site = harness.site({})
    site.handler.routes.update({(APP, "/"): html("home", f"http://{OTHER}:{site.port}/x"),
                                (OTHER, "/robots.txt"): silent(max_seconds=30), (OTHER, "/x"): html("x")})
    started = harness.start(harness.definition([f"http://{APP}:{site.port}/"], request_timeout_seconds=3,
                                               max_child_failures=1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = harness.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=started.parent_job_id)).jobs
        home = [c for c in children if c.depth == 0 and c.status == jobs_pb2.JOB_STATUS_COMPLETED]
        if home:
            break
        time.sleep(0.05)
    assert home, "the home page did not finish"
    assert home[0].finish_time.ToDatetime().timestamp() - home[0].start_time.ToDatetime().timestamp() < 2
    from quaero.api.executor.v1 import executor_pb2

    harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(parent_job_id=started.parent_job_id))
