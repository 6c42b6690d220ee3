"""The pytest plugin that quaero.testing ships (loaded through its `pytest11` entry point), used the way
the README shows it to people who test their own services against Quaero."""
from __future__ import annotations

from typing import Any

from quaero.testing.site import html


def test_my_crawl(quaero_harness: Any, quaero_site: Any) -> None:
    site = quaero_site({("app.test", "/"): html("Home", "/next"), ("app.test", "/next"): html("Next")})
    outcome = quaero_harness.crawl([f"http://app.test:{site.port}/"])
    assert sorted(d.title for d in outcome.documents) == ["Home", "Next"]
    assert [r.path for r in site.requests] == ["/robots.txt", "/", "/next"]


def test_the_manager_fixture_serves_the_api(quaero_manager: Any) -> None:
    from quaero.api.manager.v1 import jobs_pb2

    job = quaero_manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="mine", name="from my test"))
    assert quaero_manager.client.get_job(job.id).name == "from my test"
