"""Whatever a page holds, its record fits, on both databases; a record the manager refuses, a dropped
database connection or a start that cannot create its first pages still ends every page and every
run with a verdict, promptly."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from quaero.api.manager.v1 import documents_pb2, jobs_pb2
from quaero.testing.harness import CrawlHarness, start_manager
from quaero.testing.site import Request, Response, html
from tests.support.hosts import RESOLVE

APP = "app.site.test"
MiB = 1024 * 1024


def test_a_page_with_huge_text_nuls_and_long_links_is_stored_within_the_limits(db_harness: CrawlHarness) -> None:
    long_link = "/long/" + "x" * 3000
    medium_link = "/medium/" + "y" * 600
    huge_text = "word " * (600 * 1024)  # 3 MiB of visible text
    site = db_harness.site({
        (APP, "/"): Response(body=f"<html><head><title>Nul\x00Title</title></head><body><p>before\x00after</p>"
                                  f'<a href="{long_link}">long</a><a href="{medium_link}">medium</a>'
                                  f'<a href="/huge">huge</a><a href="/nul\x00link">nul</a></body></html>'),
        (APP, long_link): html("long page"), (APP, medium_link): html("medium page"),
        (APP, "/huge"): Response(body=f"<html><title>huge</title><body><p>{huge_text}</p></body></html>"),
        (APP, "/nul%EF%BF%BDlink"): html("nul link"), (APP, "/nul%00link"): html("nul link"),
        (APP, "/plain"): Response(body="plain\x00text", content_type="text/plain"),
    })
    result = db_harness.crawl([f"http://{APP}:{site.port}/", f"http://{APP}:{site.port}/plain"], max_depth=1)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, [(c.name[:60], c.error) for c in result.children]
    # The parser reads a NUL as U+FFFD (as browsers do); what is stored never holds one.
    by_title = {d.title.replace("\ufffd", ""): d for d in result.documents}
    assert set(by_title) == {"NulTitle", "long page", "medium page", "huge", "nul link", ""}
    assert all("\x00" not in d.text + d.title for d in result.documents)
    assert by_title["NulTitle"].text.replace("\ufffd", "").startswith("beforeafter")
    assert by_title[""].text == "plaintext"
    huge = by_title["huge"]
    assert huge.text_truncated and MiB - 8 <= len(huge.text.encode()) <= MiB
    assert not by_title["long page"].text_truncated
    assert by_title["long page"].url == f"http://{APP}:{site.port}{long_link}"
    again = db_harness.client.documents.GetDocument(documents_pb2.GetDocumentRequest(url=by_title["long page"].url))
    assert again.title == "long page"
    child = next(c for c in result.children if c.name.startswith(f"http://{APP}:{site.port}/long/"))
    assert len(child.name) <= 512


def test_a_page_with_thousands_of_links_records_within_the_limits(db_harness: CrawlHarness) -> None:
    links = [f"/item/{n}/" + "z" * 150 for n in range(6000)]
    site = db_harness.site({(APP, "/"): html("index", *links)})
    result = db_harness.crawl([f"http://{APP}:{site.port}/"], max_depth=1, max_pages=10)
    [index] = [c for c in result.children if c.depth == 0]
    assert index.status == jobs_pb2.JOB_STATUS_COMPLETED
    from quaero.convert import struct_to_dict

    found = struct_to_dict(index.result)
    assert found["links_found"] == 5000 and found["links_dropped"] == 1000
    assert result.parent.progress_total == 10


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CrawlHarness]:
    """A harness whose manager can be told to fail chosen RPCs (QUAERO_FAULT_INJECT)."""
    manager = start_manager(tmp_path / "data", faults="NoSuchMethod=INTERNAL")
    harness = CrawlHarness(manager, resolve=RESOLVE)
    yield harness
    harness.close()
    manager.close()


def inject(harness: CrawlHarness, spec: str) -> None:
    harness.manager.faults.configure(spec)


def test_a_record_the_manager_refuses_fails_the_page_record_failed_at_once(faulty: CrawlHarness) -> None:
    site = faulty.site({(APP, "/"): html("home", "/a"), (APP, "/a"): html("a")})
    inject(faulty, "CompleteLeasedJobs=INVALID_ARGUMENT*1")
    started = time.monotonic()
    result = faulty.crawl([f"http://{APP}:{site.port}/"], max_child_failures=1)
    assert time.monotonic() - started < 10
    [home] = result.children
    assert home.status == jobs_pb2.JOB_STATUS_FAILED and home.error_reason == "RECORD_FAILED"
    assert "INVALID_ARGUMENT" in home.error and home.attempts == 1
    assert len([r for r in site.requests if r.path == "/"]) == 1, "the page was fetched again"


def test_a_transient_manager_error_while_recording_is_retried(faulty: CrawlHarness) -> None:
    site = faulty.site({(APP, "/"): html("home", "/a"), (APP, "/a"): html("a")})
    inject(faulty, "CompleteLeasedJobs=UNAVAILABLE*6")  # more than gRPC's own 5 attempts
    result = faulty.crawl([f"http://{APP}:{site.port}/"])
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert sorted(d.title for d in result.documents) == ["a", "home"]


def test_a_manager_without_batched_records_gets_one_record_per_page(faulty: CrawlHarness) -> None:
    """An older manager answers CompleteLeasedJobs UNIMPLEMENTED: the executor records page by page."""
    site = faulty.site({(APP, "/"): html("home", "/a", "/b"), (APP, "/a"): html("a"), (APP, "/b"): html("b")})
    inject(faulty, "CompleteLeasedJobs=UNIMPLEMENTED")
    result = faulty.crawl([f"http://{APP}:{site.port}/"])
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert sorted(d.title for d in result.documents) == ["a", "b", "home"]
    assert all(child.attempts == 1 for child in result.children)


def test_a_start_that_cannot_create_its_first_pages_fails_the_run_with_a_reason(faulty: CrawlHarness) -> None:
    site = faulty.site({(APP, "/"): html("home")})
    definition = faulty.definition([f"http://{APP}:{site.port}/"])
    inject(faulty, "BatchCreateChildJobs=INTERNAL*1")
    with pytest.raises(grpc.RpcError) as caught:
        faulty.start(definition, request_id="start-fails")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    [parent] = faulty.client.jobs.ListJobs(jobs_pb2.ListJobsRequest()).jobs
    assert parent.status == jobs_pb2.JOB_STATUS_FAILED and parent.error_reason == "START_FAILED"
    again = faulty.start(definition, request_id="start-fails")
    assert again.parent_job_id == parent.id
    assert faulty.wait(parent.id).status == jobs_pb2.JOB_STATUS_FAILED


def test_a_start_cut_short_is_finished_by_the_retry_with_the_same_request_id(faulty: CrawlHarness) -> None:
    site = faulty.site({(APP, "/"): html("home", "/a"), (APP, "/a"): html("a")})
    definition = faulty.definition([f"http://{APP}:{site.port}/"])
    # The run becomes RUNNING, then neither its pages nor its failure can be written.
    inject(faulty, "BatchCreateChildJobs=UNAVAILABLE,UpdateJobStatus=UNAVAILABLE@1")
    with pytest.raises(grpc.RpcError) as caught:
        faulty.start(definition, request_id="cut-short")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    [parent] = faulty.client.jobs.ListJobs(jobs_pb2.ListJobsRequest()).jobs
    assert parent.status == jobs_pb2.JOB_STATUS_RUNNING and parent.progress_total == 0
    inject(faulty, "")
    again = faulty.start(definition, request_id="cut-short")
    assert again.parent_job_id == parent.id and again.children_created == 1
    result = faulty.outcome(parent.id)
    assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED and len(result.documents) == 2


def test_dropped_postgres_connections_cost_no_page(postgres_url: str, admin_url: str, tmp_path: Path) -> None:
    manager = start_manager(tmp_path / "data", postgres_url)
    harness = CrawlHarness(manager, resolve=RESOLVE)
    try:
        def slow(request: Request) -> Response:
            time.sleep(0.05)
            return html(request.path)

        routes: dict[tuple[str, str], Any] = {(APP, "/"): html("index", *[f"/p{n}" for n in range(60)])}
        routes.update({(APP, f"/p{n}"): slow for n in range(60)})
        site = harness.site(routes)
        started = harness.start(harness.definition([f"http://{APP}:{site.port}/"], concurrency=4))
        database = postgres_url.rsplit("/", 1)[1]
        killed = 0
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for _ in range(3):
                time.sleep(0.4)
                row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
                killed += row[0] if row else 0
        assert killed > 0
        result = harness.outcome(started.parent_job_id)
        assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED, [(c.name, c.error) for c in result.children
                                                                      if c.error]
        assert len(result.documents) == 61
    finally:
        harness.close()
        manager.close()
