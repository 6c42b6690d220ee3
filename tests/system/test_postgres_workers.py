"""With PostgreSQL, several executors share one run's children through leases (FOR UPDATE SKIP LOCKED):
every page is fetched exactly once and each executor does part of the work."""
from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness, cookie, start_manager
from quaero.testing.site import Request, Response, html
from tests.support.hosts import RESOLVE

APP = "app.site.test"


def test_two_executors_share_a_run_on_postgres_without_fetching_a_page_twice(postgres_url: str, tmp_path: Path) -> None:
    manager = start_manager(tmp_path / "data", postgres_url)
    first, second = CrawlHarness(manager, workers=4, resolve=RESOLVE), CrawlHarness(manager, workers=4, resolve=RESOLVE)
    try:
        def slow(request: Request) -> Response:
            time.sleep(0.02)
            return html(request.path)

        routes: dict[tuple[str, str], Any] = {(APP, "/"): html("index", *[f"/p{n}" for n in range(40)])}
        routes.update({(APP, f"/p{n}"): slow for n in range(40)})
        site = first.site(routes)
        auth = first.credentials([cookie("sid", "pg-shared", APP)], "pg-shared")
        result = first.crawl([f"http://{APP}:{site.port}/"], auth, concurrency=8)
        assert result.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
        assert len(result.documents) == 41
        fetched = collections.Counter(r.path for r in site.requests if r.path != "/robots.txt")
        assert set(fetched.values()) == {1}, [path for path, count in fetched.items() if count > 1]
        assert first.executor.worker.children_processed > 0 and second.executor.worker.children_processed > 0
        assert all("sid=pg-shared" in r.cookie for r in site.requests if r.path != "/robots.txt")
    finally:
        first.close()
        second.close()
        manager.close()
