"""The `quaero` CLI against real services (in this process; tests/process covers it as a process)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quaero.api.manager.v1 import auth_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Request, Response, html
from tests.support.cli import Cli, one_line_error

APP = "app.site.test"


def test_import_of_extension_json_stores_good_cookies_and_names_refused_ones_without_values(
        harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
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
    result = cli("auth", "import", str(path), "--site", "app.site.test", "--id", "app")
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "stored 2 cookies" in output and "auth_id app" in output
    for name, why in [("tracker", "public suffix"), ("__Host-broken", "__Host-"), ("__Secure-plain", "__Secure-"),
                      ("inject", "';'"), ("crlf", "control characters"), ("elsewhere", "not part of")]:
        line = next((line for line in output.splitlines() if f"'{name}'" in line), "")
        assert why in line, f"{name}: {line!r}"
    for n in range(1, 9):
        assert f"value-{n}" not in output + result.stderr
    stored = harness.as_executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="app"))
    by_name = {c.name: c for c in stored.cookies}
    assert not by_name["sid"].include_subdomains and by_name["sid"].HasField("expire_time")
    assert by_name["wide"].include_subdomains and by_name["wide"].domain == "site.test"
    assert not by_name["wide"].HasField("expire_time")
    listed = cli("auth", "ls")
    assert "app" in listed.stdout and "good-value" not in listed.stdout


def test_import_of_netscape_cookies_txt_and_playwright_storage_state(harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
    expiry = int((datetime.now(UTC) + timedelta(days=2)).timestamp())
    netscape = tmp_path / "cookies.txt"
    netscape.write_text("# Netscape HTTP Cookie File\n"
                        f"app.site.test\tFALSE\t/\tFALSE\t{expiry}\tsid\tn1\n"
                        f"#HttpOnly_.site.test\tTRUE\t/app\tTRUE\t0\twide\tn2\n")
    result = cli("auth", "import", str(netscape), "--site", "site.test", "--id", "netscape")
    assert result.returncode == 0 and "stored 2 cookies" in result.stdout and "Netscape" in result.stdout
    cookies = {c.name: c for c in harness.as_executor.auth.GetCredentials(
        auth_pb2.GetCredentialsRequest(id="netscape")).cookies}
    assert not cookies["sid"].include_subdomains and cookies["sid"].expire_time.seconds == expiry
    assert cookies["wide"].include_subdomains and cookies["wide"].path == "/app" and cookies["wide"].http_only
    assert not cookies["wide"].HasField("expire_time")

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"cookies": [
        {"name": "pw", "value": "p1", "domain": "app.site.test", "path": "/", "expires": -1, "httpOnly": True,
         "secure": False, "sameSite": "Lax"}], "origins": []}))
    result = cli("auth", "import", str(state), "--site", "app.site.test", "--id", "pw")
    assert result.returncode == 0 and "storageState" in result.stdout
    cookie = harness.as_executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="pw")).cookies[0]
    assert not cookie.include_subdomains and not cookie.HasField("expire_time") and cookie.same_site == "lax"


def test_bad_input_and_unreachable_services_give_one_readable_line(harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
    assert "no such file" in one_line_error(cli("auth", "import", str(tmp_path / "missing.json"),
                                                   "--site", "a.test"))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert "not valid JSON" in one_line_error(cli("auth", "import", str(broken), "--site", "a.test"))
    assert "not reachable" in one_line_error(cli("jobs", "ls", manager="127.0.0.1:1"))
    assert "token" in one_line_error(cli("jobs", "ls", token="wrong"))
    assert "JOB_NOT_FOUND" in one_line_error(cli("jobs", "show", "00000000-0000-4000-8000-000000000000"))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('id = "bad"\n[crawl]\nstart_urls = ["nope"]\n')
    line = one_line_error(cli("definitions", "apply", str(bad_toml)))
    assert "INVALID_ARGUMENT" in line and "crawl.start_urls[0]" in line
    bad_toml.write_text('id = "bad"\n[crawl]\nstart_urls = ["https://a.test/"]\nrender = "javascript"\n')
    line = one_line_error(cli("definitions", "apply", str(bad_toml)))
    assert "crawl.render" in line and '"js"' in line
    assert "DEFINITION_NOT_FOUND" in one_line_error(cli("run", "missing-definition"))
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    line = one_line_error(cli("jobs", "ls", token="", cwd=lonely))
    assert "no API token" in line and "QUAERO_API_TOKEN" in line
    assert not (lonely / ".quaero").exists(), "a client must not invent a token"
    usage = cli("auth", "import")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr


def test_apply_run_and_inspect_a_crawl(harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
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
    assert cli("auth", "import", str(cookies), "--site", APP).returncode == 0
    definition = tmp_path / "crawl.toml"
    definition.write_text(f'id = "cli-crawl"\nname = "CLI crawl"\nauth_id = "{APP}"\n'
                          f'[crawl]\nstart_urls = ["http://{APP}:{site.port}/"]\nmax_depth = 2\n'
                          'allowed_networks = ["127.0.0.1/32"]\n')
    applied = cli("definitions", "apply", str(definition))
    assert applied.returncode == 0 and "cli-crawl" in applied.stdout
    assert "cli-crawl" in cli("definitions", "ls").stdout
    run = cli("run", "cli-crawl")
    assert run.returncode == 0, run.stderr
    assert "completed: 3/3 pages, 0 failed" in run.stdout
    parent_id = run.stdout.split("started run ", 1)[1].split()[0]
    assert parent_id in cli("jobs", "ls").stdout
    shown = cli("jobs", "show", parent_id).stdout
    assert "completed" in shown and f"'auth_id': '{APP}'" in shown
    tree = cli("jobs", "tree", parent_id).stdout
    assert tree.count("completed") >= 4
    logs = cli("jobs", "logs", parent_id, "--children")
    assert logs.returncode == 0
    docs = cli("docs", "ls", "--job", parent_id).stdout
    assert docs.count(f"http://{APP}:{site.port}/") == 3
    document = cli("docs", "show", f"http://{APP}:{site.port}/a").stdout
    assert "A: members only" in document
    assert "cli-session" not in run.stdout + shown + tree + logs.stdout + docs + document


def test_rm_commands_delete_credentials_and_definitions(harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
    cookies = tmp_path / "c.json"
    cookies.write_text(json.dumps([{"name": "sid", "value": "rm-me", "domain": APP, "hostOnly": True, "path": "/",
                                    "session": True}]))
    assert cli("auth", "import", str(cookies), "--site", APP, "--id", "gone").returncode == 0
    definition = tmp_path / "d.toml"
    definition.write_text('id = "doomed"\n[crawl]\nstart_urls = ["http://a.test/"]\n')
    assert cli("definitions", "apply", str(definition)).returncode == 0
    assert cli("definitions", "rm", "doomed").returncode == 0
    assert "doomed" not in cli("definitions", "ls").stdout
    assert cli("auth", "rm", "gone").returncode == 0
    assert "gone" not in cli("auth", "ls").stdout
    assert "CREDENTIALS_NOT_FOUND" in one_line_error(cli("auth", "rm", "gone"))
    assert "DEFINITION_NOT_FOUND" in one_line_error(cli("definitions", "rm", "doomed"))


def test_the_cli_says_where_a_file_is_broken_and_stores_secure_false_as_not_secure(harness: CrawlHarness, cli: Cli,
                                                                                  tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"name": "sid", "value": "secret-value-9", "expirationDate": "soon"}]')
    line = one_line_error(cli("auth", "import", str(broken), "--site", "app.site.test"))
    assert "not a number of seconds" in line and "secret-value-9" not in line
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"name": "sid", "value": "v", "domain": "app.site.test", "secure": "false"}]))
    result = cli("auth", "import", str(good), "--site", "app.site.test", "--id", "flags")
    assert result.returncode == 0, result.stderr
    [cookie] = harness.as_executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="flags")).cookies
    assert not cookie.secure


def test_auth_ls_shows_the_earliest_expiry_and_the_run_that_refreshed_the_credentials(harness: CrawlHarness,
                                                                                     cli: Cli) -> None:
    from quaero.testing.harness import cookie
    from quaero.testing.session_site import COOKIE, SessionSite

    site = SessionSite("rotate", pages=3).start()
    try:
        expires = datetime.now(UTC) + timedelta(days=2)
        auth_id = harness.credentials([cookie(COOKIE, site.sign_in(), "127.0.0.1", expires=expires)], "rotating",
                                      site="127.0.0.1")
        before = next(line for line in cli("auth", "ls").stdout.splitlines() if line.strip().startswith("│ rotating")
                      or " rotating " in line)
        assert expires.strftime("%Y-%m-%d") in before and before.rstrip(" │").endswith("-")  # never refreshed
        run = harness.crawl([f"http://127.0.0.1:{site.port}/p/0"], auth_id, max_depth=5, concurrency=1)
        assert len(run.documents) == 3 and site.refused == 0
        listed = cli("auth", "ls").stdout
        assert f"(run {run.parent.id[:8]})" in listed
        values = {r.cookie for r in site.server.requests if r.cookie}  # type: ignore[union-attr]
        assert values and not any(value.split("=", 1)[1] in listed for value in values)
    finally:
        site.stop()
