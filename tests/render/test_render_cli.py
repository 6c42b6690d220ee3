"""render = "js" from the command line: a TOML definition applied, listed and run."""
from __future__ import annotations

import json
from pathlib import Path

from quaero.testing.harness import CrawlHarness
from quaero.testing.spa import APP, serve_app
from tests.support.cli import Cli


def test_a_js_definition_in_toml_runs_from_the_cli(harness: CrawlHarness, cli: Cli, tmp_path: Path) -> None:
    site, _app = serve_app(5, "cli-js-session", with_off_site=False)
    harness.sites.append(site)
    cookies = tmp_path / "cookies.json"
    cookies.write_text(json.dumps([{"name": "sid", "value": "cli-js-session", "domain": APP, "hostOnly": True,
                                    "path": "/", "session": True}]))
    assert cli("auth", "import", str(cookies), "--site", APP).returncode == 0
    definition = tmp_path / "app.toml"
    definition.write_text(f'id = "spa"\nauth_id = "{APP}"\n[crawl]\nstart_urls = ["http://{APP}:{site.port}/"]\n'
                          'render = "js"\nallowed_networks = ["127.0.0.1/32"]\n')
    assert cli("definitions", "apply", str(definition)).returncode == 0
    listed = cli("definitions", "ls").stdout
    assert "spa" in listed and " js " in listed
    run = cli("run", "spa")
    assert run.returncode == 0, run.stderr
    assert "completed: 5/5 pages, 0 failed" in run.stdout
    document = cli("docs", "show", f"http://{APP}:{site.port}/p/4").stdout
    assert "secret content of page 4" in document
    assert "cli-js-session" not in run.stdout + listed + document
