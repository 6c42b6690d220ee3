"""A foreign client in the project's own tests: clients/node/contract.js (@grpc/grpc-js and
@grpc/proto-loader, protos/ loaded at run time) walks the contract against a real manager and executor:
create, merge and replace, etags, error details from grpc-status-details-bin, paging, WatchJob and one
authenticated crawl, reached by IP literal."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Request, Response, html

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
SESSION = "node-session-5d1c"


def node_client_ready() -> str:
    """The node binary, when the client's packages are installed (`build.py test` installs them)."""
    node = shutil.which("node")
    if node and (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return node
    message = "the Node.js client is not installed (node, and npm install in clients/node; build.py test does both)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: this test fails instead of skipping)")
    pytest.skip(message)


def members_site(harness: CrawlHarness) -> Any:
    def page(number: int) -> Any:
        def handle(request: Request) -> Response:
            if f"session={SESSION}" not in request.cookie:
                return Response(status=302, headers=[("Location", "/login")])
            return html(f"Members {number}", *([f"/m/{number + 1}"] if number < 3 else []))
        return handle

    return harness.site({("127.0.0.1", f"/m/{n}"): page(n) for n in (1, 2, 3)} | {("127.0.0.1", "/login"): html("Log in")})


def test_the_node_client_walks_the_contract(harness: CrawlHarness) -> None:
    node = node_client_ready()
    site = members_site(harness)
    env = {**os.environ, "QUAERO_MANAGER": harness.manager.address, "QUAERO_EXECUTOR": harness.executor_address,
           "QUAERO_API_TOKEN": harness.manager.token, "START_URL": f"http://127.0.0.1:{site.port}/m/1",
           "COOKIE_DOMAIN": "127.0.0.1", "SESSION": SESSION}
    result = subprocess.run([node, str(CLIENT / "contract.js")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["checked"] == ["merge-and-replace", "etag", "error-details", "paging", "watch", "crawl"]
    assert summary["titles"] == ["Members 1", "Members 2", "Members 3"]
    assert SESSION not in result.stdout + result.stderr
    # The crawl really was logged in: every page saw the session, the login page was never fetched.
    assert not [r for r in site.requests if r.path == "/login"]
