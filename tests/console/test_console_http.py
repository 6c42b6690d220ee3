"""The console's guard over HTTP (what a browser would not send: forged cookies, cross-site posts,
floods of sign-ins) and its cost to the manager (one WatchJob per watched run, whatever the browsers)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.routing import Route

from console_service.config import ConsoleSettings, UnsafeListen
from console_service.sessions import FAILED_LOGINS_ALLOWED, Sessions
from quaero.api.executor.v1 import executor_pb2
from quaero.config import ServerTls
from quaero.testing.console import csrf_of
from quaero.testing.site import Request, Response, html

from .conftest import Stack, signed_in_client

PAGES = ["/runs", "/definitions", "/credentials", "/documents?q=x", "/health", "/login"]


def test_every_answer_carries_the_security_headers(stack: Stack) -> None:
    with signed_in_client(stack) as web:
        for path in [*PAGES, "/static/console.css", "/static/no-such.js", "/runs/not-a-run", "/no-such-page"]:
            answer = web.get(path)
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
            assert answer.headers["x-frame-options"] == "DENY", path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            if not path.startswith("/static/"):
                assert answer.headers["cache-control"] == "no-store", path
        assert web.get("/static/no-such.js").status_code == 404
        assert web.get("/runs/not-a-run").status_code == 400
        assert web.get("/runs/6f1c0b53-3f6e-4f43-9c57-0d1c6a3f2b11").status_code == 404


def test_every_state_changing_route_checks_the_csrf_token_and_the_origin(stack: Stack) -> None:
    posts = [route for route in stack.console.app.app.routes
             if isinstance(route, Route) and route.methods and "POST" in route.methods]
    assert len(posts) >= 8
    assert all(getattr(route.endpoint, "state_changing", False) for route in posts), "a POST without the check"
    with signed_in_client(stack) as web:
        token = csrf_of(web.get("/runs").text)
        for route in posts:
            path = route.path.replace("{run_id}", "6f1c0b53-3f6e-4f43-9c57-0d1c6a3f2b11").replace(
                "{definition_id}", "d").replace("{auth_id}", "a")
            assert web.post(path, data={}).status_code == 403, path
            assert web.post(path, data={"csrf": "forged"}).status_code == 403, path
            refused = web.post(path, data={"csrf": token}, headers={"origin": "http://evil.test"})
            assert refused.status_code == 403 and "another site" in refused.text, path
        assert web.get("/runs").status_code == 200  # still signed in: nothing above signed it out


def test_without_a_session_pages_send_to_the_login_and_the_rest_is_refused(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url) as web:
        answer = web.get("/runs?status=failed")
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
        assert web.get("/runs/x/events", headers={"accept": "text/event-stream"}).status_code == 401
        assert web.get("/runs", headers={"hx-request": "true"}).headers["hx-redirect"] == "/login"
        assert web.get("/definitions", headers={"cookie": "quaero_console=forged.signature"}).status_code == 303
        login = web.get("/login")
        before = web.cookies["quaero_console"]
        signed = web.post("/login", data={"csrf": csrf_of(login.text), "token": stack.token, "next": "//evil.test/x"})
        assert signed.status_code == 303 and signed.headers["location"] == "/runs"  # never off the console
        assert web.cookies["quaero_console"] != before  # a new session id at sign-in
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and stack.token not in cookie


def test_failed_sign_ins_are_limited(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url) as web:
        token = csrf_of(web.get("/login").text)
        for _ in range(FAILED_LOGINS_ALLOWED):
            assert web.post("/login", data={"csrf": token, "token": "guess"}).status_code == 401
        blocked = web.post("/login", data={"csrf": token, "token": stack.token})
        assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text


def test_an_idle_session_ends() -> None:
    now = [1000.0]
    sessions = Sessions(idle_seconds=60, clock=lambda: now[0])
    session = sessions.sign_in(sessions.new())
    cookie = sessions.cookie_value(session)
    now[0] += 59
    assert sessions.find(cookie) is session  # seen: the idle time starts again
    now[0] += 59
    assert sessions.find(cookie) is session
    now[0] += 61
    assert sessions.find(cookie) is None
    assert sessions.find(cookie[:-2] + "xx") is None


def test_a_network_address_needs_tls_or_an_explicit_flag() -> None:
    with pytest.raises(UnsafeListen, match="not a loopback address"):
        ConsoleSettings("0.0.0.0", 8080, "m", "e", "t")
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.9"):
        ConsoleSettings(loopback, 8080, "m", "e", "t")
    ConsoleSettings("0.0.0.0", 8080, "m", "e", "t", allow_public_http=True)
    ConsoleSettings("0.0.0.0", 8080, "m", "e", "t", tls=ServerTls(Path("cert.pem"), Path("key.pem")))
    refused = subprocess.run([sys.executable, "-m", "quaero", "console", "--listen", "0.0.0.0:0"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "QUAERO_API_TOKEN": "t"})
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "not a loopback address" in lines[0], refused.stderr


def slow_run(stack: Stack, pages: int) -> str:
    def page(n: int) -> Callable[[Request], Response]:
        def handle(_request: Request) -> Response:
            time.sleep(0.2)
            return html(f"p{n}", f"/p/{n + 1}")
        return handle

    site = stack.harness.site({("127.0.0.1", f"/p/{n}"): page(n) for n in range(pages)})
    definition = stack.harness.definition([f"http://127.0.0.1:{site.port}/p/0"], concurrency=1, max_depth=pages + 1)
    return stack.harness.start(definition).parent_job_id


def test_fifty_browsers_on_one_run_cost_the_manager_one_watch_stream(stack: Stack) -> None:
    run_id = slow_run(stack, 40)
    watchers_before = REGISTRY.get_sample_value("quaero_watchers") or 0.0
    with signed_in_client(stack) as web:
        cookies = dict(web.cookies)
    counts = [0] * 50
    seen_with_all_open: list[float] = []

    async def browser(client: httpx.AsyncClient, n: int) -> None:
        async with client.stream("GET", f"/runs/{run_id}/events") as events:
            assert events.status_code == 200
            async for line in events.aiter_lines():
                if line != "event: live":
                    continue
                counts[n] += 1
                if all(counts) and not seen_with_all_open:
                    seen_with_all_open.append((REGISTRY.get_sample_value("quaero_watchers") or 0.0) - watchers_before)
                    seen_with_all_open.append(stack.console.app.state.feeds.streams)
                if counts[n] == 4:
                    return

    async def fifty() -> float:
        async with httpx.AsyncClient(base_url=stack.url, cookies=cookies, timeout=30) as client:
            started = time.monotonic()
            await asyncio.gather(*(browser(client, n) for n in range(50)))
            return time.monotonic() - started

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        seconds = thread.submit(asyncio.run, fifty()).result(timeout=60)
    assert counts == [4] * 50
    assert seen_with_all_open == [1, 1], "WatchJob streams the manager and the console had open for 50 browsers"
    assert seconds >= 1.4, "four updates each at most two a second take 1.5 s"
    deadline = time.monotonic() + 5
    while stack.console.app.state.feeds.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.console.app.state.feeds.streams == 0, "the feed outlived its last browser"
    stack.harness.executor_stub.CancelExecution(executor_pb2.CancelExecutionRequest(parent_job_id=run_id))
