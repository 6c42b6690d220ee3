"""A run is one browser session: cookies a site re-sets or rotates while it is crawled are sent by the pages
that come after, reach the stored credentials (the next run starts from them), and never leak. Against
local sites whose session slides or rotates, on SQLite and PostgreSQL."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from quaero.api.manager.v1 import auth_pb2, jobs_pb2
from quaero.testing.harness import CrawlHarness, RunningManager, cookie
from quaero.testing.session_site import COOKIE, SessionSite
from quaero.testing.site import Request, Response, html

IP = "127.0.0.1"


@pytest.fixture
def sites() -> Any:
    started: list[SessionSite] = []

    def make(mode: str, **options: Any) -> SessionSite:
        site = SessionSite(mode, **options).start()
        started.append(site)
        return site

    yield make
    for site in started:
        site.stop()


def signed_in_credentials(harness: CrawlHarness, site: SessionSite, auth_id: str, lifetime: float = 3600) -> str:
    return harness.credentials([cookie(COOKIE, site.sign_in(), IP, expires=datetime.now(UTC) + timedelta(
        seconds=lifetime))], auth_id, site=IP)


def crawl(harness: CrawlHarness, site: SessionSite, auth_id: str, **options: Any) -> Any:
    options.setdefault("max_depth", 50)
    return harness.crawl([f"http://{IP}:{site.port}/p/0"], auth_id, **options)


def stored_pages(result: Any) -> list[str]:
    return sorted(d.url for d in result.documents if d.title.startswith("Page "))


def credentials_info(harness: CrawlHarness, auth_id: str) -> auth_pb2.CredentialsInfo:
    listed = harness.client.auth.ListCredentials(auth_pb2.ListCredentialsRequest(page_size=100)).credentials
    return next(info for info in listed if info.id == auth_id)


def test_a_sliding_session_stays_signed_in_past_the_lifetime_it_was_imported_with(db_harness: CrawlHarness,
                                                                                   sites: Any) -> None:
    site = sites("slide", pages=6, lifetime=3)
    auth_id = signed_in_credentials(db_harness, site, "sliding", lifetime=3)
    imported = credentials_info(db_harness, auth_id)
    result = crawl(db_harness, site, auth_id, concurrency=1, per_host_delay_seconds=0.8)
    # 6 pages 0.8 s apart outlive the imported cookie (3 s): each page is sent the lifetime the last one set.
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, result.parent.error
    assert len(stored_pages(result)) == 6 and site.refused == 0
    refreshed = credentials_info(db_harness, auth_id)
    assert refreshed.refreshed_by_job_id == result.parent.id
    assert refreshed.earliest_expire_time.ToDatetime() > imported.earliest_expire_time.ToDatetime() + timedelta(
        seconds=2)
    # The next run starts from the refreshed session: the imported one has ended by now.
    second = crawl(db_harness, site, auth_id, concurrency=1, max_pages=2)
    assert second.parent.status == jobs_pb2.JOB_STATUS_COMPLETED and len(stored_pages(second)) == 2
    assert site.refused == 0


def test_a_rotating_session_is_followed_page_after_page_and_the_next_run_starts_from_its_newest_value(
        db_harness: CrawlHarness, sites: Any) -> None:
    site = sites("rotate", pages=8)
    auth_id = signed_in_credentials(db_harness, site, "rotating")
    result = crawl(db_harness, site, auth_id, concurrency=1)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, result.parent.error
    assert len(stored_pages(result)) == 8 and site.refused == 0
    # The value imported stopped working after the first page: only a refreshed credential signs in now.
    second = crawl(db_harness, site, auth_id, concurrency=1, max_pages=3)
    assert len(stored_pages(second)) == 3 and site.refused == 0
    assert credentials_info(db_harness, auth_id).refreshed_by_job_id == second.parent.id


def test_pages_in_flight_at_once_on_a_rotating_session_all_complete_within_twice_the_requests(
        db_harness: CrawlHarness, sites: Any) -> None:
    site = sites("rotate", pages=40, fanout=2)
    auth_id = signed_in_credentials(db_harness, site, "rotating-8")
    result = crawl(db_harness, site, auth_id, concurrency=8)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, result.parent.error
    assert all(child.status == jobs_pb2.JOB_STATUS_COMPLETED for child in result.children), [
        (c.name, c.error) for c in result.children if c.status != jobs_pb2.JOB_STATUS_COMPLETED]
    assert len(stored_pages(result)) == 40
    requests = site.signed_in + site.refused
    assert requests <= 2 * 40, (site.signed_in, site.refused)


@pytest.mark.parametrize("mode", ["rotate", "slide"])
def test_two_executors_on_one_run_at_concurrency_8_keep_it_signed_in(manager: RunningManager, sites: Any,
                                                                     mode: str) -> None:
    """Each executor sees the other's rotations with its next lease; a page sent a value the other one's
    page had just replaced goes back and is fetched again with the run's newest session."""
    executors = [CrawlHarness(manager, workers=8), CrawlHarness(manager, workers=8)]
    try:
        site = sites(mode, pages=40, fanout=2, lifetime=3)
        auth_id = signed_in_credentials(executors[0], site, f"two-{mode}")
        result = crawl(executors[0], site, auth_id, concurrency=8)
        assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, result.parent.error
        assert len(result.children) == 40
        assert all(child.status == jobs_pb2.JOB_STATUS_COMPLETED for child in result.children)
        assert {child.result["authenticated_with"] for child in result.children} == {"parent metadata"}
        assert site.signed_in + site.refused <= 2 * 40, (site.signed_in, site.refused)
    finally:
        for executor in executors:
            executor.close()


def test_a_run_whose_credentials_have_all_expired_fails_at_once_saying_how_to_fix_it(db_harness: CrawlHarness,
                                                                                    sites: Any) -> None:
    site = sites("fixed")
    auth_id = db_harness.credentials([cookie(COOKIE, "old", IP, expires=datetime.now(UTC) + timedelta(seconds=1))],
                                     "expired-creds", site=IP)
    time.sleep(1.2)
    result = crawl(db_harness, site, auth_id)
    assert result.parent.status == jobs_pb2.JOB_STATUS_FAILED
    assert result.parent.error_reason == "AUTH_EXPIRED"
    assert "quaero auth import" in result.parent.error and "expired-creds" in result.parent.error
    assert not result.children and not site.server.requests  # type: ignore[union-attr]


def test_cookies_a_run_learns_stay_in_that_run_and_its_credentials(db_harness: CrawlHarness, sites: Any) -> None:
    """Two runs with two credentials on one executor, at once: each run's rotations are its own."""
    alice_site, bob_site = sites("rotate", pages=6), sites("rotate", pages=6)
    alice = signed_in_credentials(db_harness, alice_site, "alice-s")
    bob = signed_in_credentials(db_harness, bob_site, "bob-s")
    started = [db_harness.start(db_harness.definition([f"http://{IP}:{s.port}/p/0"], auth_id, max_depth=50,
                                                      concurrency=1)).parent_job_id
               for s, auth_id in ((alice_site, alice), (bob_site, bob))]
    results = [db_harness.outcome(parent_id) for parent_id in started]
    assert [len(stored_pages(r)) for r in results] == [6, 6]
    assert alice_site.refused == bob_site.refused == 0
    alice_values = {r.cookie for r in alice_site.server.requests}  # type: ignore[union-attr]
    bob_values = {r.cookie for r in bob_site.server.requests}  # type: ignore[union-attr]
    assert not alice_values & bob_values - {""}  # (both sites are on 127.0.0.1: ports do not isolate cookies)


def test_a_site_cannot_replace_a_credential_cookie_from_a_host_that_does_not_domain_match(
        db_harness: CrawlHarness) -> None:
    app, evil, sibling = "app.site.test", "evil.test", "notapp.site.test"

    def page(request: Request) -> Response:
        if "session=good" not in request.cookie:
            return Response(status=302, headers=[("Location", "/login")])
        return html("Page app", f"http://{evil}:{{port}}/x", f"http://{sibling}:{{port}}/y", "/next")

    routes: dict[tuple[str, str], Any] = {
        (app, "/"): page, (app, "/next"): page,
        # Another site, and a sibling, try to overwrite or add the app's session.
        (evil, "/x"): Response(body="<html><title>evil</title></html>", headers=[
            ("Set-Cookie", "session=evil1; Domain=app.site.test"), ("Set-Cookie", "session=evil2; Domain=site.test"),
            ("Set-Cookie", "session=evil3")]),
        (sibling, "/y"): Response(body="<html><title>sibling</title></html>", headers=[
            ("Set-Cookie", "session=evil4; Domain=app.site.test"), ("Set-Cookie", "session=evil5")]),
    }
    site = db_harness.site(routes)
    routes[(app, "/")] = routes[(app, "/next")] = lambda request: _with_port(page(request), site.port)
    auth_id = db_harness.credentials([cookie("session", "good", app)], "guarded")
    before = db_harness.as_executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id=auth_id))
    result = db_harness.crawl([f"http://{app}:{site.port}/"], auth_id, same_site_only=False)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    after = db_harness.as_executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id=auth_id))
    assert [(c.name, c.value, c.domain) for c in after.cookies] == [(c.name, c.value, c.domain) for c in before.cookies]
    app_requests = [r for r in site.requests if r.host == app]
    assert app_requests and all("evil1" not in r.cookie and "evil4" not in r.cookie and "evil3" not in r.cookie
                                for r in app_requests)


def _with_port(response: Response, port: int) -> Response:
    if isinstance(response.body, str):
        response.body = response.body.replace("{port}", str(port))
    return response


def test_a_domain_attribute_naming_the_address_itself_sets_a_cookie_the_next_pages_send(
        db_harness: CrawlHarness) -> None:
    def first(request: Request) -> Response:
        page = html("Page 1", "/two")
        page.headers = [("Set-Cookie", f"pass=ok; Domain={IP}; Path=/")]
        return page

    def second(request: Request) -> Response:
        return html("Page 2" if "pass=ok" in request.cookie else "no pass")

    site = db_harness.site({(IP, "/one"): first, (IP, "/two"): second})
    result = db_harness.crawl([f"http://{IP}:{site.port}/one"], "")
    assert sorted(d.title for d in result.documents) == ["Page 1", "Page 2"]


def test_session_cookies_from_a_host_that_does_not_domain_match_are_refused_by_the_manager(
        manager: RunningManager) -> None:
    operator = manager.client
    parent = operator.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawl"))
    operator.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=parent.id, status=jobs_pb2.JOB_STATUS_RUNNING))
    operator.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(
        parent_id=parent.id, children=[jobs_pb2.ChildJobSpec(type="crawl_page", dedup_key="a")]))
    executor = manager.connect_as_executor()
    try:
        leased = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w", max_jobs=1)).leased_jobs[0]
        request = jobs_pb2.CompleteLeasedJobRequest(job_id=leased.job.id, lease_token=leased.lease.lease_token,
                                                    status=jobs_pb2.JOB_STATUS_COMPLETED)
        item = request.session_cookies.add(set_by_url="http://evil.test/")
        item.cookie.CopyFrom(cookie("session", "stolen-value-77", "app.site.test"))
        with pytest.raises(grpc.RpcError) as refused:
            executor.jobs.CompleteLeasedJob(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "evil.test may not set a cookie" in (refused.value.details() or "")
        assert "stolen-value-77" not in (refused.value.details() or "")
        # Nothing was written: the page is still leased, and completes without the cookie.
        del request.session_cookies[:]
        assert executor.jobs.CompleteLeasedJob(request).status == jobs_pb2.JOB_STATUS_COMPLETED
    finally:
        executor.close()


def test_session_values_are_sealed_at_rest_and_never_reach_logs_or_operator_answers(
        harness: CrawlHarness, sites: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    site = sites("rotate", pages=5)
    auth_id = signed_in_credentials(harness, site, "sealed")
    with caplog.at_level("DEBUG"):
        result = crawl(harness, site, auth_id, concurrency=1)
    assert len(stored_pages(result)) == 5
    values = {r.cookie.split("=", 1)[1] for r in site.server.requests if r.cookie}  # type: ignore[union-attr]
    assert len(values) == 5  # a new value per page
    operator_answers = "".join(str(answer) for answer in (
        harness.client.auth.ListCredentials(auth_pb2.ListCredentialsRequest()),
        harness.client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=result.parent.id)),
        *result.children, *result.logs, *result.documents))
    database = b"".join(path.read_bytes() for path in (harness.manager.data_dir).glob("*.db*"))
    assert database  # (the SQLite file and its WAL were read)
    for value in values:
        assert value not in caplog.text and value not in operator_answers
        assert value.encode() not in database


def test_two_runs_share_nothing_through_the_executors_session_copy(harness: CrawlHarness, sites: Any) -> None:
    """A second run of the same definition starts from the credentials (refreshed), never from the first
    run's session in the executor's memory: a cookie new to the site stays with its run."""
    def first(request: Request) -> Response:
        page = html("Page 0")
        page.headers = [("Set-Cookie", "run_only=1; Path=/")]
        return page

    site = harness.site({(IP, "/p/0"): first})
    harness.crawl([f"http://{IP}:{site.port}/p/0"], "")
    harness.crawl([f"http://{IP}:{site.port}/p/0"], "")
    assert [r.cookie for r in site.requests if r.path == "/p/0"] == ["", ""]


def test_a_login_form_served_in_place_is_auth_expired_when_the_definition_marks_it(db_harness: CrawlHarness) -> None:
    login_form = ("<html><head><title>Welcome</title></head><body><form id='login' action='/session'>"
                  "<input name='user'><input type='password' name='pass'></form><a href='/help'>help</a></body></html>")

    def page(request: Request) -> Response:
        if "session=valid" in request.cookie:
            return html("Members", "/stale")
        return Response(body=login_form)  # 200, no redirect: the login form in place of the page

    site = db_harness.site({(IP, "/members"): page, (IP, "/stale"): page, (IP, "/help"): html("help")})
    auth_id = db_harness.credentials([cookie("session", "valid", IP, path="/members")], "in-place", site=IP)
    result = db_harness.crawl([f"http://{IP}:{site.port}/members"], auth_id,
                              logged_out_markers=["css:form#login input[type=password]"])
    by_url = {child.name.rsplit("/", 1)[1]: child for child in result.children}
    assert by_url["members"].status == jobs_pb2.JOB_STATUS_COMPLETED
    assert by_url["stale"].status == jobs_pb2.JOB_STATUS_FAILED and by_url["stale"].error_reason == "AUTH_EXPIRED"
    assert "login form served in place" in by_url["stale"].error and "form#login" in by_url["stale"].error
    assert [d.title for d in result.documents] == ["Members"]  # the form is not stored ...
    assert not [r for r in site.requests if r.path == "/help"]  # ... and its links are not followed
    # Without the marker the same form is stored as a page (the marker has no default).
    plain = db_harness.crawl([f"http://{IP}:{site.port}/members"], auth_id)
    assert sorted(d.title for d in plain.documents) == ["Members", "Welcome", "help"]
