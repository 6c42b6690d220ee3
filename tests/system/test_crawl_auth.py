"""The reason the project exists: children get auth_id from the parent through GetJob, persisted
before they start, with the job definition as the fallback."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness, cookie, start_manager
from quaero.testing.site import Request, Response, html
from tests.support.hosts import RESOLVE

HOST = "app.site.test"


def protected_site(harness: CrawlHarness, accepted: dict[str, str], pages: int = 4) -> Any:
    """Pages that need one of the accepted session values; each page says whose session it saw."""

    def page(number: int) -> Any:
        def handle(request: Request) -> Response:
            for owner, value in accepted.items():
                if f"session={value}" in request.cookie:
                    links = [f"/p/{n}" for n in (number + 1,) if n <= pages]
                    return html(f"Page {number}", *links, "/logout", body=f"Members only. Signed in as {owner}")
            return Response(status=302, headers=[("Location", "/login")])
        return handle

    routes: dict[tuple[str, str], Any] = {(HOST, f"/p/{n}"): page(n) for n in range(1, pages + 1)}
    routes[(HOST, "/login")] = html("Log in")
    routes[(HOST, "/logout")] = Response(status=302, headers=[("Location", "/login")])
    return harness.site(routes)


def test_every_protected_page_is_stored_and_the_parent_metadata_is_in_the_database(harness: CrawlHarness) -> None:
    site = protected_site(harness, {"alice": "alice-secret-1"})
    auth_id = harness.credentials([cookie("session", "alice-secret-1", HOST)], "alice")
    base = f"http://{HOST}:{site.port}"
    result = harness.crawl([f"{base}/p/1"], auth_id)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert sorted(d.url for d in result.documents) == [f"{base}/p/{n}" for n in range(1, 5)]
    assert all("Signed in as alice" in d.text for d in result.documents)
    metadata = dict(result.parent.metadata)
    assert metadata["auth_id"] == "alice" and metadata["phase"] == "execution"
    assert metadata["job_definition_id"] == dict(result.parent.config)["job_definition_id"]
    assert not [r for r in site.requests if r.path == "/logout"]


def test_children_use_the_credential_in_the_parents_metadata_when_they_run(sqlite_manager: Any) -> None:
    # An executor with no workers starts the run; the parent's auth_id is then changed in the
    # database; a second executor's workers run the children and must use the new credential.
    control = CrawlHarness(sqlite_manager, workers=0, resolve=RESOLVE)
    try:
        site = protected_site(control, {"alice": "alice-secret-2", "bob": "bob-secret-2"}, pages=2)
        alice = control.credentials([cookie("session", "alice-secret-2", HOST)], "alice")
        bob = control.credentials([cookie("session", "bob-secret-2", HOST)], "bob")
        started = control.start(control.definition([f"http://{HOST}:{site.port}/p/1"], alice))
        patch = struct_pb2.Struct()
        patch.update({"auth_id": bob})
        sqlite_manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
            job_id=started.parent_job_id, metadata=patch))
        assert not site.requests, "no child may run before the workers start"
        workers = CrawlHarness(sqlite_manager, workers=2, resolve=RESOLVE)
        try:
            result = workers.outcome(started.parent_job_id)
        finally:
            workers.close()
        assert len(result.documents) == 2
        assert all("Signed in as bob" in d.text for d in result.documents)
        assert all("alice-secret-2" not in r.cookie for r in site.requests)
    finally:
        control.close()


def test_an_auth_id_in_a_childs_own_config_is_ignored(harness: CrawlHarness) -> None:
    site = protected_site(harness, {"alice": "alice-secret-3"}, pages=1)
    harness.credentials([cookie("session", "alice-secret-3", HOST)], "alice")
    harness.credentials([cookie("session", "mallory-secret-3", HOST)], "mallory")
    control = CrawlHarness(harness.manager, workers=0, resolve=RESOLVE)
    try:
        started = control.start(control.definition([f"http://{HOST}:{site.port}/p/1"], "alice"))
        children = harness.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=started.parent_job_id)).jobs
        patch = struct_pb2.Struct()
        patch.update({"auth_id": "mallory"})
        harness.client.jobs.UpdateJobConfig(jobs_pb2.UpdateJobConfigRequest(job_id=children[0].id, config=patch))
    finally:
        control.close()
    result = harness.outcome(started.parent_job_id)
    assert "Signed in as alice" in result.documents[0].text
    assert all("mallory-secret-3" not in r.cookie for r in site.requests)


@pytest.fixture
def failing_metadata_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The fault is caused in the real manager for this run: its UpdateJobMetadata answers UNAVAILABLE.
    running = start_manager(tmp_path / "data", faults="UpdateJobMetadata=UNAVAILABLE")
    yield running
    running.close()


def test_a_failed_metadata_write_is_a_warning_and_children_fall_back_to_the_definition(
        failing_metadata_manager: Any, caplog: pytest.LogCaptureFixture) -> None:
    harness = CrawlHarness(failing_metadata_manager, resolve=RESOLVE)
    try:
        site = protected_site(harness, {"alice": "alice-secret-4"}, pages=3)
        auth_id = harness.credentials([cookie("session", "alice-secret-4", HOST)], "alice")
        with caplog.at_level(logging.WARNING, logger="quaero.executor"):
            started = harness.start(harness.definition([f"http://{HOST}:{site.port}/p/1"], auth_id))
            result = harness.outcome(started.parent_job_id)
        assert not started.metadata_persisted
        assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
        assert "auth_id" not in result.parent.metadata
        assert len(result.documents) == 3 and all("Signed in as alice" in d.text for d in result.documents)
        warning = [r.getMessage() for r in caplog.records if "metadata_persist_failed" in r.getMessage()]
        assert warning and "children will fall back to the job definition" in warning[0]
        assert started.parent_job_id in warning[0]
        messages = [log.message for log in result.logs]
        assert any("failed to persist job metadata" in m for m in messages)
        assert any("from the job definition" in m for m in messages)
    finally:
        harness.close()


def test_without_metadata_or_definition_auth_children_crawl_logged_out_and_say_so(failing_metadata_manager: Any) -> None:
    harness = CrawlHarness(failing_metadata_manager, resolve=RESOLVE)
    try:
        site = harness.site({(HOST, "/public"): html("Public page")})
        result = harness.crawl([f"http://{HOST}:{site.port}/public"])
        assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
        assert [d.title for d in result.documents] == ["Public page"]
        assert all(not r.cookie for r in site.requests)
        assert any("crawling without cookies" in log.message for log in result.logs)
    finally:
        harness.close()
