"""A hostile page costs at most itself: every broken, slow, huge or malicious answer ends its child at
once with a specific verdict, and the rest of the run goes on. Real local sites, the real services."""
from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness, RunOutcome
from quaero.testing.site import Response, html
from tests.support.grpc_errors import expect_error
from tests.support.hostile import Watch, gzip_bomb, raw, silent, slow_body, trickle

APP = "app.site.test"
MiB = 1024 * 1024


def seconds_spent(child: jobs_pb2.Job) -> float:
    return child.finish_time.ToDatetime().timestamp() - child.start_time.ToDatetime().timestamp()


def crawl_with(harness: CrawlHarness, routes: dict[str, Any], **options: Any) -> tuple[Any, RunOutcome]:
    """A site whose home page links to each route (by path), crawled one level deep."""
    site = harness.site({})
    site.handler.routes[(APP, "/")] = html("home", *routes)
    for path, response in routes.items():
        site.handler.routes[(APP, path)] = response
    options.setdefault("max_child_failures", 100)
    options.setdefault("max_depth", 1)
    result = harness.crawl([f"http://{APP}:{site.port}/"], **options)
    return site, result


def verdicts(result: RunOutcome) -> dict[str, str]:
    return {c.name.rsplit("/", 1)[1]: c.error_reason for c in result.children if c.depth == 1}


def test_slow_answers_fail_fetch_timeout_within_the_request_timeout(harness: CrawlHarness) -> None:
    status_line = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"
    site, result = crawl_with(harness, {
        "/trickled-body": slow_body(size=5000, interval=0.2),  # every read comes in time; the whole does not
        "/trickled-headers": trickle(status_line, interval=0.2),
        "/silent": silent(),
        "/fine": html("fine"),
    }, request_timeout_seconds=1.5)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED  # three failures, within the tolerance
    found = verdicts(result)
    assert found == {"trickled-body": "FETCH_TIMEOUT", "trickled-headers": "FETCH_TIMEOUT", "silent": "FETCH_TIMEOUT",
                     "fine": ""}, found
    for child in result.children:
        if child.error_reason == "FETCH_TIMEOUT":
            assert seconds_spent(child) < 1.5 + 2.0, (child.name, seconds_spent(child))
            assert "1.5 s" in child.error
    assert [d.title for d in result.documents if d.title == "fine"] == ["fine"]


def test_bodies_are_capped_after_decompression_and_a_bomb_costs_no_more_than_the_cap(harness: CrawlHarness) -> None:
    big = "<html><body>" + "x" * (6 * MiB) + "</body></html>"
    declared = raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 99999999999\r\n\r\nabc")
    site, result = crawl_with(harness, {"/bomb": gzip_bomb(200 * MiB), "/big": Response(body=big),
                                        "/declared": declared, "/ok": html("ok")})
    assert verdicts(result) == {"bomb": "BODY_TOO_LARGE", "big": "BODY_TOO_LARGE", "declared": "BODY_TOO_LARGE",
                                "ok": ""}
    bomb = next(c for c in result.children if c.name.endswith("/bomb"))
    assert "5120 KiB" in bomb.error and seconds_spent(bomb) < 3


def test_broken_http_ends_the_page_with_its_own_reason(harness: CrawlHarness) -> None:
    truncated = raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\nonly this")
    bad_chunks = raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n")
    corrupt_gzip = Response(body=b"this is not gzip", headers=[("Content-Encoding", "gzip")])
    site, result = crawl_with(harness, {
        "/garbage": raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "/truncated": truncated, "/chunks": bad_chunks,
        "/brotli": Response(body="x", headers=[("Content-Encoding", "br")]), "/corrupt": corrupt_gzip,
        "/nothing": raw(b""), "/ok": html("ok")})
    assert verdicts(result) == {"garbage": "BAD_RESPONSE", "truncated": "BAD_RESPONSE", "chunks": "BAD_RESPONSE",
                                "brotli": "BAD_CONTENT_ENCODING", "corrupt": "BAD_CONTENT_ENCODING",
                                "nothing": "BAD_RESPONSE", "ok": ""}
    assert result.parent.progress_current == result.parent.progress_total == 8


def test_redirects_to_data_javascript_and_overlong_urls_fail_bad_redirect(harness: CrawlHarness) -> None:
    site, result = crawl_with(harness, {
        "/data": Response(status=302, headers=[("Location", "data:text/html,<h1>hi</h1>")]),
        "/js": Response(status=301, headers=[("Location", "javascript:alert(document.cookie)")]),
        "/long": Response(status=302, headers=[("Location", "/" + "a" * 5000)]),
        "/mailto": Response(status=302, headers=[("Location", "mailto:someone@example.com")]),
    })
    assert verdicts(result) == {"data": "BAD_REDIRECT", "js": "BAD_REDIRECT", "long": "BAD_REDIRECT",
                                "mailto": "BAD_REDIRECT"}
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED  # ended, within the tolerance
    data = next(c for c in result.children if c.name.endswith("/data"))
    assert "data: URL" in data.error


def test_a_catastrophic_looking_pattern_is_linear_and_the_executor_stays_responsive(harness: CrawlHarness) -> None:
    links = ["/" + "a" * n + "!" for n in (27, 200, 3000)] + ["/aaa"]
    site = harness.site({(APP, "/"): html("home", *links)})
    for link in links:
        site.handler.routes[(APP, link)] = html(link[:10])
    started = time.monotonic()
    result = harness.crawl([f"http://{APP}:{site.port}/"], include_patterns=[r"/(a+)+$"], max_depth=1)
    assert time.monotonic() - started < 10
    assert sorted(c.name.rsplit("/", 1)[1] for c in result.children) == ["", "aaa"]
    with grpc.insecure_channel(harness.executor_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_cancel_stops_an_in_flight_fetch_within_a_second(harness: CrawlHarness) -> None:
    watch = Watch()
    site = harness.site({(APP, "/"): slow_body(size=100_000, interval=0.05, watch=watch)})
    started = harness.start(harness.definition([f"http://{APP}:{site.port}/"], request_timeout_seconds=120))
    deadline = time.monotonic() + 10
    while not watch.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watch.started, "the page was never requested"
    time.sleep(0.3)
    from quaero.api.executor.v1 import executor_pb2

    cancelled_at = time.monotonic()
    harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(parent_job_id=started.parent_job_id))
    while not watch.closed and time.monotonic() < cancelled_at + 5:
        time.sleep(0.02)
    assert watch.closed and watch.closed[0] - cancelled_at < 1.5, "the fetch went on after the run was cancelled"
    outcome = harness.outcome(started.parent_job_id)
    assert outcome.parent.status == jobs_pb2.JOB_STATUS_CANCELLED
    assert [c.status for c in outcome.children] == [jobs_pb2.JOB_STATUS_CANCELLED]


@pytest.mark.parametrize("field,value", [
    ("per_host_delay_seconds", float("inf")), ("per_host_delay_seconds", 1e6), ("per_host_delay_seconds", float("nan")),
    ("per_host_delay_seconds", -1.0), ("request_timeout_seconds", float("inf")), ("request_timeout_seconds", 0.0),
    ("request_timeout_seconds", 1000.0)])
def test_delays_and_timeouts_must_be_finite_and_sane(harness: CrawlHarness, field: str, value: float) -> None:
    error = expect_error(lambda: harness.definition(["http://app.site.test/"], **{field: value}),
                         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION", f"job_definition.crawl.{field}")
    assert f"crawl.{field}" in error.details()


@pytest.mark.parametrize("field,pattern", [("include_patterns", r"(a)\1"), ("exclude_patterns", r"foo(?=bar)"),
                                           ("logged_out_patterns", r"(?<!x)login"), ("include_patterns", "(")])
def test_a_pattern_re2_cannot_compile_is_refused_naming_the_field(harness: CrawlHarness, field: str,
                                                                  pattern: str) -> None:
    error = expect_error(lambda: harness.definition(["http://app.site.test/"], **{field: [r"ok", pattern]}),
                         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION", f"job_definition.crawl.{field}[1]")
    assert "RE2" in error.details()


def test_one_runs_delay_does_not_hold_up_another_run_on_the_same_host(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/slow"): html("slow", "/s1", "/s2"), (APP, "/s1"): html("s1"),
                         (APP, "/s2"): html("s2"), (APP, "/quick"): html("quick", "/q1", "/q2"),
                         (APP, "/q1"): html("q1"), (APP, "/q2"): html("q2")})
    patient = harness.start(harness.definition([f"http://{APP}:{site.port}/slow"], per_host_delay_seconds=60))
    time.sleep(0.5)
    started = time.monotonic()
    quick = harness.crawl([f"http://{APP}:{site.port}/quick"])
    assert quick.parent.status == jobs_pb2.JOB_STATUS_COMPLETED and len(quick.documents) == 3
    assert time.monotonic() - started < 10
    from quaero.api.executor.v1 import executor_pb2

    harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(parent_job_id=patient.parent_job_id))
    assert harness.wait(patient.parent_job_id, timeout=5).status == jobs_pb2.JOB_STATUS_CANCELLED
