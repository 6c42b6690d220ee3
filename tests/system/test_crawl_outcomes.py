"""Logged-out detection, error tolerance, cancelling, empty runs, bad definitions and secrets."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from quaero.api.executor.v1 import executor_pb2
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.testing.harness import CrawlHarness, cookie
from quaero.testing.site import Response, html
from tests.support.grpc_errors import expect_error

APP = "app.site.test"


def test_a_login_redirect_fails_the_child_auth_expired_and_stores_nothing(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/members"): Response(status=302, headers=[("Location", "/users/sign_in?next=/m")]),
                         (APP, "/users/sign_in"): html("Sign in")})
    auth = harness.credentials([cookie("sid", "stale", APP)])
    result = harness.crawl([f"http://{APP}:{site.port}/members"], auth, max_child_failures=5)
    child = result.children[0]
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "AUTH_EXPIRED"
    assert "not authenticated" in child.error and "login page" in child.error
    assert result.documents == []
    assert not [r for r in site.requests if r.path == "/users/sign_in"], "the login page is neither fetched nor stored"


@pytest.mark.parametrize("status", [401, 403])
def test_a_401_or_403_fails_the_child_auth_rejected(harness: CrawlHarness, status: int) -> None:
    site = harness.site({(APP, "/secret"): Response(status=status, body="no")})
    auth = harness.credentials([cookie("sid", "rejected", APP)])
    result = harness.crawl([f"http://{APP}:{site.port}/secret"], auth)
    child = result.children[0]
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "AUTH_REJECTED"
    assert str(status) in child.error
    assert result.documents == []
    assert len([r for r in site.requests if r.path == "/secret"]) == 1, "an auth failure is not retried"


def failing_site(harness: CrawlHarness, good: int, bad: int, slow: float = 0.0) -> tuple[Any, str]:
    site = harness.site({})
    links = [f"/bad/{n}" for n in range(bad)] + [f"/ok/{n}" for n in range(good)]  # failures come first

    def ok(_request: Any) -> Response:
        time.sleep(slow)
        return html("ok")

    site.handler.routes[(APP, "/")] = html("index", *links)
    for n in range(good):
        site.handler.routes[(APP, f"/ok/{n}")] = ok
    for n in range(bad):
        site.handler.routes[(APP, f"/bad/{n}")] = Response(status=403)
    return site, f"http://{APP}:{site.port}/"


def test_continue_keeps_crawling_and_fails_the_parent_at_the_end_past_the_tolerance(harness: CrawlHarness) -> None:
    site, start = failing_site(harness, good=4, bad=3)
    result = harness.crawl([start], max_child_failures=1,
                           failure_action=definitions_pb2.FAILURE_ACTION_CONTINUE)
    assert result.parent.status == jobs_pb2.JOB_STATUS_FAILED
    assert result.parent.error_reason == "TOO_MANY_CHILD_FAILURES" and "3 of 8" in result.parent.error
    assert len(result.documents) == 5  # index + 4 good pages: nothing was cut short
    assert all(c.status in (jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED) for c in result.children)


def test_within_the_tolerance_the_parent_completes(harness: CrawlHarness) -> None:
    site, start = failing_site(harness, good=2, bad=2)
    result = harness.crawl([start], max_child_failures=2)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert result.parent.children_failed == 2 and result.parent.progress_current == result.parent.progress_total == 5


def test_stop_all_cancels_pending_children_and_fails_the_parent(harness: CrawlHarness) -> None:
    site, start = failing_site(harness, good=30, bad=2, slow=0.05)
    result = harness.crawl([start], max_child_failures=0, concurrency=1,
                           failure_action=definitions_pb2.FAILURE_ACTION_STOP_ALL)
    assert result.parent.status == jobs_pb2.JOB_STATUS_FAILED
    assert "stop_all" in result.parent.error
    cancelled = [c for c in result.children if c.status == jobs_pb2.JOB_STATUS_CANCELLED]
    assert cancelled, "pending children were not cancelled"
    time.sleep(0.5)
    assert len([r for r in site.requests if r.path.startswith("/ok/")]) < 30


def test_cancel_execution_cancels_the_parent_and_its_pending_children(harness: CrawlHarness) -> None:
    site, start = failing_site(harness, good=40, bad=0, slow=0.05)
    started = harness.start(harness.definition([start], concurrency=1, per_host_delay_seconds=0.05))
    deadline = time.monotonic() + 10
    while not [r for r in site.requests if r.path.startswith("/ok/")] and time.monotonic() < deadline:
        time.sleep(0.02)
    reply = harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(
        parent_job_id=started.parent_job_id))
    assert reply.parent_status == jobs_pb2.JOB_STATUS_CANCELLED and reply.children_cancelled > 0
    result = harness.outcome(started.parent_job_id)
    assert result.parent.status == jobs_pb2.JOB_STATUS_CANCELLED
    stats = harness.client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=started.parent_job_id))
    assert stats.pending == 0 and stats.running == 0
    fetched_then = len(site.requests)
    time.sleep(0.5)
    assert len(site.requests) <= fetched_then + 1, "the crawl went on after it was cancelled"
    again = harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(
        parent_job_id=started.parent_job_id))
    assert again.parent_status == jobs_pb2.JOB_STATUS_CANCELLED and again.children_cancelled == 0


def test_a_run_with_no_reachable_page_completes_with_nothing_stored(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/robots.txt"): Response(body="User-agent: *\nDisallow: /\n",
                                                        content_type="text/plain")})
    result = harness.crawl([f"http://{APP}:{site.port}/"])
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert result.documents == []
    assert [r.path for r in site.requests] == ["/robots.txt"]


def test_max_pages_bounds_the_children_of_one_run(harness: CrawlHarness) -> None:
    site, start = failing_site(harness, good=20, bad=0)
    result = harness.crawl([start], max_pages=5)
    assert result.parent.progress_total == 5 and len(result.children) == 5 and len(result.documents) == 5


def test_a_repeated_request_id_starts_one_run(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home")})
    definition = harness.definition([f"http://{APP}:{site.port}/"])
    first = harness.start(definition, request_id="run-once")
    second = harness.start(definition, request_id="run-once")
    assert first.parent_job_id == second.parent_job_id
    harness.wait(first.parent_job_id)
    # The same request_id for another definition is a mistake, not a retry; and an operator's own
    # CreateJob with that id is another caller's request: it makes its own job.
    other = harness.definition([f"http://{APP}:{site.port}/other"])
    expect_error(lambda: harness.start(other, request_id="run-once"), grpc.StatusCode.ALREADY_EXISTS,
                 "REQUEST_ID_REUSED", "request_id")
    mine = harness.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawl", name="x", request_id="run-once"))
    assert mine.id != first.parent_job_id


@pytest.mark.parametrize("crawl,field", [
    ({"start_urls": ["not a url"]}, "job_definition.crawl.start_urls[0]"),
    ({"start_urls": ["ftp://x.test/"]}, "job_definition.crawl.start_urls[0]"),
    ({"start_urls": []}, "job_definition.crawl.start_urls"),
    ({"start_urls": ["http://a.test/"], "max_depth": -1}, "job_definition.crawl.max_depth"),
    ({"start_urls": ["http://a.test/"], "max_pages": 0}, "job_definition.crawl.max_pages"),
    ({"start_urls": ["http://a.test/"], "include_patterns": ["("]}, "job_definition.crawl.include_patterns[0]"),
])
def test_bad_definitions_are_rejected_before_anything_runs(harness: CrawlHarness, crawl: dict[str, Any],
                                                           field: str) -> None:
    definition = definitions_pb2.JobDefinition(id="bad", crawl=definitions_pb2.CrawlConfig(**crawl))
    expect_error(lambda: harness.client.definitions.CreateJobDefinition(
        definitions_pb2.CreateJobDefinitionRequest(job_definition=definition)),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION", field)
    expect_error(lambda: harness.client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id="bad")),
                 grpc.StatusCode.NOT_FOUND)


def test_an_unknown_auth_id_is_a_failed_precondition_at_definition_and_at_run_time(harness: CrawlHarness) -> None:
    definition = definitions_pb2.JobDefinition(id="needs-auth", auth_id="nobody",
                                               crawl=definitions_pb2.CrawlConfig(start_urls=["http://a.test/"]))
    expect_error(lambda: harness.client.definitions.CreateJobDefinition(
        definitions_pb2.CreateJobDefinitionRequest(job_definition=definition)),
        grpc.StatusCode.FAILED_PRECONDITION, "AUTH_NOT_FOUND", "job_definition.auth_id")
    auth = harness.credentials([cookie("sid", "x", APP)], "short-lived")
    definition_id = harness.definition(["http://a.test/"], auth)
    harness.client.auth.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(id=auth))
    runs_before = len(harness.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000)).jobs)
    expect_error(lambda: harness.start(definition_id), grpc.StatusCode.FAILED_PRECONDITION, "AUTH_NOT_FOUND")
    assert len(harness.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000)).jobs) == runs_before
    expect_error(lambda: harness.start("no-such-definition"), grpc.StatusCode.NOT_FOUND, "DEFINITION_NOT_FOUND")


def test_no_cookie_value_leaks_into_logs_jobs_errors_or_the_database_file(
        harness: CrawlHarness, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    secret = "s3cr3t-cookie-value-" + "x" * 12
    site = harness.site({})
    port = site.port
    site.handler.routes.update({(APP, "/"): html("home", "/a", "/gone", "/denied"), (APP, "/a"): html("a"),
                                (APP, "/gone"): Response(status=302, headers=[("Location", "/login")]),
                                (APP, "/denied"): Response(status=401)})
    auth = harness.credentials([cookie("sid", secret, APP), cookie("bad;name", secret, APP)])
    with caplog.at_level("DEBUG"):
        result = harness.crawl([f"http://{APP}:{port}/"], auth, max_child_failures=5)
        expect_error(lambda: harness.client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(
            site_domain=APP, cookies=[cookie("x", secret + ";evil", APP)])), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(secret in r.cookie for r in site.requests), "the cookie was not even sent"
    jobs = [result.parent, *result.children]
    for job in jobs:
        assert secret not in str(job), f"secret in job {job.id}"
    assert all(secret not in log.message for log in result.logs)
    assert all(secret not in record.getMessage() for record in caplog.records)
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    listed = harness.client.auth.ListCredentials(auth_pb2.ListCredentialsRequest())
    assert secret not in str(listed)
    database = Path(harness.manager.data_dir) / "quaero.db"
    for path in [database, database.with_name("quaero.db-wal")]:
        if path.exists():
            assert secret.encode() not in path.read_bytes(), f"plain cookie value in {path.name}"
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    assert secret not in dump


def test_an_unreachable_host_fails_the_child_saying_so(harness: CrawlHarness) -> None:
    result = harness.crawl(["http://127.0.0.1:1/"], max_child_failures=1)
    child = result.children[0]
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "CONNECT_FAILED"
    assert "cannot reach" in child.error


def test_execute_with_the_manager_down_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    from executor_service.config import ExecutorSettings
    from executor_service.server import ExecutorServer
    from quaero.api.executor.v1 import executor_pb2_grpc
    from quaero.rpc.channel import open_channel
    from quaero.rpc.status import from_rpc_error

    executor = ExecutorServer(ExecutorSettings(listen="127.0.0.1:0", manager="127.0.0.1:1", token="token",
                                               manager_token="executor-token", workers=0))
    port = executor.start()
    channel = open_channel(f"127.0.0.1:{port}", "token", default_timeout=30)
    try:
        stub = executor_pb2_grpc.ExecutorStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(definition_id="any"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert from_rpc_error(caught.value).reason == "MANAGER_UNAVAILABLE"
        assert "manager is not reachable" in caught.value.details()
        # The executor retried the manager; the caller does not retry that answer again.
        assert time.monotonic() - started < 5
    finally:
        channel.close()
        executor.stop(grace=0)


def test_a_link_to_an_unreachable_host_fails_only_its_own_child(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home", "http://127.0.0.1:1/nowhere")})
    result = harness.crawl([f"http://{APP}:{site.port}/"], same_site_only=False, max_child_failures=1)
    assert [d.title for d in result.documents] == ["home"]
    failed = [c for c in result.children if c.status == jobs_pb2.JOB_STATUS_FAILED]
    assert [c.name for c in failed] == ["http://127.0.0.1:1/nowhere"] and failed[0].error_reason == "CONNECT_FAILED"
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
