"""render = "js" on an executor that has no browser: each page fails at once with a reason and the command
that fixes it; nothing hangs and the run ends."""
from __future__ import annotations

import pytest

from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import html

APP = "app.site.test"


def test_a_missing_browser_fails_the_pages_with_the_install_command(harness: CrawlHarness,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_CHROMIUM", "/nonexistent/chromium")
    site = harness.site({(APP, "/"): html("home"), (APP, "/other"): html("other")})
    result = harness.crawl([f"http://{APP}:{site.port}/", f"http://{APP}:{site.port}/other"],
                           render=definitions_pb2.RENDER_MODE_JS)
    assert result.parent.status == jobs_pb2.JOB_STATUS_FAILED  # its failures went past the tolerance (0)
    assert [c.error_reason for c in result.children] == ["BROWSER_UNAVAILABLE"] * 2
    message = result.children[0].error
    assert "QUAERO_CHROMIUM" in message and "apt-get install -y --no-install-recommends chromium" in message
    assert not result.documents
