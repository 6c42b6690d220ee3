"""The `quaero` CLI as a user runs it: a real process against real services."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quaero.api.manager.v1 import auth_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Request, Response, html

APP = "app.site.test"


def quaero(harness: CrawlHarness | None, *args: str, token: str | None = None, cwd: Path | None = None,
           manager: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUAERO_API_TOKEN": token if token is not None else (harness.manager.token if harness else ""),
           "QUAERO_MANAGER": manager or (harness.manager.address if harness else "127.0.0.1:1"),
           "QUAERO_EXECUTOR": harness.executor_address if harness else "127.0.0.1:1"}
    return subprocess.run([sys.executable, "-m", "quaero", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_import_of_extension_json_stores_good_cookies_and_names_refused_ones_without_values(
        harness: CrawlHarness, tmp_path: Path) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).timestamp()
    exported = [
        {"name": "sid", "value": "good-value-1", "domain": "app.site.test", "hostOnly": True, "path": "/",
         "secure": False, "httpOnly": True, "sameSite": "lax", "session": False, "expirationDate": future},
        {"name": "wide", "value": "good-value-2", "domain": ".site.test", "hostOnly": False, "path": "/",
         "secure": True, "session": True},
        {"name": "tracker", "value": "suffix-value-3", "domain": ".test", "hostOnly": False, "path": "/", "session": True},
        {"name": "__Host-broken", "value": "prefix-value-4", "domain": "app.site.test", "hostOnly": True, "path": "/x",
         "secure": True, "session": True},
        {"name": "__Secure-plain", "value": "prefix-value-5", "domain": "app.site.test", "hostOnly": True,
         "path": "/", "secure": False, "session": True},
        {"name": "inject", "value": "evil;value-6", "domain": "app.site.test", "hostOnly": True, "path": "/",
         "session": True},
        {"name": "crlf", "value": "evil\r\nvalue-7", "domain": "app.site.test", "hostOnly": True, "path": "/",
         "session": True},
        {"name": "elsewhere", "value": "other-value-8", "domain": "other.example", "hostOnly": True, "path": "/",
         "session": True},
    ]
    path = tmp_path / "cookies.json"
    path.write_text(json.dumps(exported))
    result = quaero(harness, "auth", "import", str(path), "--site", "app.site.test", "--id", "app")
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "stored 2 cookies" in output and "auth_id app" in output
    for name, why in [("tracker", "public suffix"), ("__Host-broken", "__Host-"), ("__Secure-plain", "__Secure-"),
                      ("inject", "';'"), ("crlf", "control characters"), ("elsewhere", "not part of")]:
        line = next((line for line in output.splitlines() if f"'{name}'" in line), "")
        assert why in line, f"{name}: {line!r}"
    for n in range(1, 9):
        assert f"value-{n}" not in output + result.stderr
    stored = harness.client.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="app"))
    by_name = {c.name: c for c in stored.cookies}
    assert by_name["sid"].host_only and by_name["sid"].HasField("expire_time")
    assert not by_name["wide"].host_only and by_name["wide"].domain == "site.test"
    assert not by_name["wide"].HasField("expire_time")
    listed = quaero(harness, "auth", "ls")
    assert "app" in listed.stdout and "good-value" not in listed.stdout


def test_import_of_netscape_cookies_txt_and_playwright_storage_state(harness: CrawlHarness, tmp_path: Path) -> None:
    expiry = int((datetime.now(UTC) + timedelta(days=2)).timestamp())
    netscape = tmp_path / "cookies.txt"
    netscape.write_text("# Netscape HTTP Cookie File\n"
                        f"app.site.test\tFALSE\t/\tFALSE\t{expiry}\tsid\tn1\n"
                        f"#HttpOnly_.site.test\tTRUE\t/app\tTRUE\t0\twide\tn2\n")
    result = quaero(harness, "auth", "import", str(netscape), "--site", "site.test", "--id", "netscape")
    assert result.returncode == 0 and "stored 2 cookies" in result.stdout and "Netscape" in result.stdout
    cookies = {c.name: c for c in harness.client.auth.GetCredentials(
        auth_pb2.GetCredentialsRequest(id="netscape")).cookies}
    assert cookies["sid"].host_only and cookies["sid"].expire_time.seconds == expiry
    assert not cookies["wide"].host_only and cookies["wide"].path == "/app" and cookies["wide"].http_only
    assert not cookies["wide"].HasField("expire_time")

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"cookies": [
        {"name": "pw", "value": "p1", "domain": "app.site.test", "path": "/", "expires": -1, "httpOnly": True,
         "secure": False, "sameSite": "Lax"}], "origins": []}))
    result = quaero(harness, "auth", "import", str(state), "--site", "app.site.test", "--id", "pw")
    assert result.returncode == 0 and "storageState" in result.stdout
    cookie = harness.client.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="pw")).cookies[0]
    assert cookie.host_only and not cookie.HasField("expire_time") and cookie.same_site == "lax"


def test_bad_input_and_unreachable_services_give_one_readable_line(harness: CrawlHarness, tmp_path: Path) -> None:
    assert "no such file" in one_line_error(quaero(harness, "auth", "import", str(tmp_path / "missing.json"),
                                                   "--site", "a.test"))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert "not valid JSON" in one_line_error(quaero(harness, "auth", "import", str(broken), "--site", "a.test"))
    assert "not reachable" in one_line_error(quaero(harness, "jobs", "ls", manager="127.0.0.1:1"))
    assert "token" in one_line_error(quaero(harness, "jobs", "ls", token="wrong"))
    assert "JOB_NOT_FOUND" in one_line_error(quaero(harness, "jobs", "show", "00000000-0000-4000-8000-000000000000"))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('id = "bad"\n[crawl]\nstart_urls = ["nope"]\n')
    line = one_line_error(quaero(harness, "definitions", "apply", str(bad_toml)))
    assert "INVALID_ARGUMENT" in line and "crawl.start_urls[0]" in line
    assert "DEFINITION_NOT_FOUND" in one_line_error(quaero(harness, "run", "missing-definition"))
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    line = one_line_error(quaero(harness, "jobs", "ls", token="", cwd=lonely))
    assert "no API token" in line and "QUAERO_API_TOKEN" in line
    assert not (lonely / ".quaero").exists(), "a client must not invent a token"
    usage = quaero(harness, "auth", "import")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr


def test_apply_run_and_inspect_a_crawl(harness: CrawlHarness, tmp_path: Path) -> None:
    def page(title: str, *links: str) -> Any:
        def handle(request: Request) -> Response:
            if "sid=cli-session" not in request.cookie:
                return Response(status=302, headers=[("Location", "/login")])
            return html(title, *links, body=f"{title}: members only")
        return handle

    site = harness.site({(APP, "/"): page("Home", "/a", "/b"), (APP, "/a"): page("A"), (APP, "/b"): page("B")})
    cookies = tmp_path / "cookies.json"
    cookies.write_text(json.dumps([{"name": "sid", "value": "cli-session", "domain": APP, "hostOnly": True,
                                    "path": "/", "session": True}]))
    assert quaero(harness, "auth", "import", str(cookies), "--site", APP).returncode == 0
    definition = tmp_path / "crawl.toml"
    definition.write_text(f'id = "cli-crawl"\nname = "CLI crawl"\nauth_id = "{APP}"\n'
                          f'[crawl]\nstart_urls = ["http://{APP}:{site.port}/"]\nmax_depth = 2\n'
                          'allowed_networks = ["127.0.0.1/32"]\n')
    applied = quaero(harness, "definitions", "apply", str(definition))
    assert applied.returncode == 0 and "cli-crawl" in applied.stdout
    assert "cli-crawl" in quaero(harness, "definitions", "ls").stdout
    run = quaero(harness, "run", "cli-crawl")
    assert run.returncode == 0, run.stderr
    assert "completed: 3/3 pages, 0 failed" in run.stdout
    parent_id = run.stdout.split("started run ", 1)[1].split()[0]
    assert parent_id in quaero(harness, "jobs", "ls").stdout
    shown = quaero(harness, "jobs", "show", parent_id).stdout
    assert "completed" in shown and f"'auth_id': '{APP}'" in shown
    tree = quaero(harness, "jobs", "tree", parent_id).stdout
    assert tree.count("completed") >= 4
    logs = quaero(harness, "jobs", "logs", parent_id, "--children")
    assert logs.returncode == 0
    docs = quaero(harness, "docs", "ls", "--job", parent_id).stdout
    assert docs.count(f"http://{APP}:{site.port}/") == 3
    document = quaero(harness, "docs", "show", f"http://{APP}:{site.port}/a").stdout
    assert "A: members only" in document
    assert "cli-session" not in run.stdout + shown + tree + logs.stdout + docs + document


@pytest.mark.parametrize("stop_with", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_up_starts_both_services_and_stopping_it_stops_them(tmp_path: Path, stop_with: str) -> None:
    import signal
    import socket

    from quaero.testing.processes import wait_serving

    env = {**os.environ, "QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": ""}
    process = subprocess.Popen([sys.executable, "-m", "quaero", "up", "--manager-listen",
                                "127.0.0.1:0", "--executor-listen", "127.0.0.1:0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        lines = [process.stdout.readline() for _ in range(3)]
        addresses = {line.split()[0]: line.split()[1] for line in lines[:2]}
        wait_serving(addresses["manager"])
        wait_serving(addresses["executor"])
        assert (tmp_path / "api-token").exists() and str(tmp_path / "api-token") in lines[2]
        process.send_signal(getattr(signal, stop_with))
        code = process.wait(30)
        assert code == (-9 if stop_with == "SIGKILL" else 0)
        assert "Traceback" not in process.stderr.read()

        def still_serving() -> list[str]:
            alive = []
            for address in addresses.values():
                with socket.socket() as probe:
                    host, port = address.rsplit(":", 1)
                    if probe.connect_ex((host, int(port))) == 0:
                        alive.append(address)
            return alive

        deadline = time.monotonic() + 15
        while still_serving() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not still_serving(), f"services outlived `quaero up` ({stop_with})"
    finally:
        if process.poll() is None:
            process.kill()


def test_rm_commands_delete_credentials_and_definitions(harness: CrawlHarness, tmp_path: Path) -> None:
    cookies = tmp_path / "c.json"
    cookies.write_text(json.dumps([{"name": "sid", "value": "rm-me", "domain": APP, "hostOnly": True, "path": "/",
                                    "session": True}]))
    assert quaero(harness, "auth", "import", str(cookies), "--site", APP, "--id", "gone").returncode == 0
    definition = tmp_path / "d.toml"
    definition.write_text('id = "doomed"\n[crawl]\nstart_urls = ["http://a.test/"]\n')
    assert quaero(harness, "definitions", "apply", str(definition)).returncode == 0
    assert quaero(harness, "definitions", "rm", "doomed").returncode == 0
    assert "doomed" not in quaero(harness, "definitions", "ls").stdout
    assert quaero(harness, "auth", "rm", "gone").returncode == 0
    assert "gone" not in quaero(harness, "auth", "ls").stdout
    assert "CREDENTIALS_NOT_FOUND" in one_line_error(quaero(harness, "auth", "rm", "gone"))
    assert "DEFINITION_NOT_FOUND" in one_line_error(quaero(harness, "definitions", "rm", "doomed"))


def test_the_demo_main_job_passes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "quaero.demo"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "pages authenticated: 9 of 9" in result.stdout
    assert "cookies offered to the off-site host: 0" in result.stdout
    assert "demo passed" in result.stdout
