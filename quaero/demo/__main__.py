"""The main job (`python -m quaero.demo`): both services on the embedded SQLite default, a demo site
that needs a session cookie, the demo session's cookies imported, a crawl, and what it fetched.

Exits 0 only when every protected page was stored with its protected content, the off-site host was
offered no cookie, robots.txt was fetched without cookies, and the logout link was never requested.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from quaero.api.manager.v1 import documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.services import ServiceFailed, start_services, stop_services
from quaero.testing.console import signed_in

from .site import OFFSITE_HOST, SIGNED_IN, SITE_HOST, DemoSite

DEFINITION = """\
id = "demo"
name = "Demo site crawl"
auth_id = "demo"
max_child_failures = 0
failure_action = "continue"

[crawl]
start_urls = ["{start}"]
max_depth = 6
max_pages = 50
same_site_only = false   # so the off-site link is fetched, and we can prove it got no cookie
concurrency = 4
allowed_networks = ["127.0.0.1/32"]   # the demo site runs on this machine; crawls reach only public addresses otherwise
"""


def cli(*args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "quaero", *args]
    print("$ quaero " + " ".join(args), flush=True)
    subprocess.run(command, env=env, check=True)


def main() -> int:
    demo = DemoSite(pages=8)
    demo.server.start()
    work = Path(tempfile.mkdtemp(prefix="quaero-demo-"))
    env = {**os.environ, "QUAERO_DATA_DIR": str(work), "QUAERO_API_TOKEN": "",
           "QUAERO_RESOLVE": f"{SITE_HOST}=127.0.0.1,{OFFSITE_HOST}=127.0.0.1",
           "QUAERO_MANAGER": "127.0.0.1:0", "QUAERO_EXECUTOR": "127.0.0.1:0"}
    os.environ.update({"QUAERO_DATA_DIR": str(work), "QUAERO_API_TOKEN": ""})
    print(f"demo site: {demo.url()} (and {demo.url(host=OFFSITE_HOST)}), data directory: {work}", flush=True)
    try:
        services = start_services("127.0.0.1:0", "127.0.0.1:0", 8, env, log_dir=work, console_listen="127.0.0.1:0")
    except ServiceFailed as error:
        print(f"demo: {error}", file=sys.stderr)
        demo.server.stop()
        return 1
    try:
        manager, executor = services[0].address, services[1].address
        print(f"manager on {manager}, executor on {executor} (SQLite in {work})", flush=True)
        print(f"console on http://{services[2].address}/ while the demo runs (sign in with the token in "
              f"{work / 'api-token'}; `quaero up` keeps one running)", flush=True)
        env.update(QUAERO_MANAGER=manager, QUAERO_EXECUTOR=executor)
        cookies = work / "demo-cookies.json"  # what a browser cookie-export extension would save
        cookies.write_text(json.dumps([{
            "name": "session", "value": demo.session, "domain": SITE_HOST, "hostOnly": True, "path": "/",
            "secure": False, "httpOnly": True, "sameSite": "lax", "session": True}]))
        cookies.chmod(0o600)
        definition = work / "demo.toml"
        definition.write_text(DEFINITION.format(start=demo.url("/")))
        cli("auth", "import", str(cookies), "--site", SITE_HOST, "--id", "demo", env=env)
        cli("definitions", "apply", str(definition), env=env)
        cli("run", "demo", env=env)
        return report(demo, manager, (work / "api-token").read_text().strip(), work, services[2].address)
    except subprocess.CalledProcessError as error:
        print(f"demo: a step failed (exit code {error.returncode})", file=sys.stderr)
        return 1
    finally:
        stop_services(services)
        demo.server.stop()


def console_view(console: str, token: str, run_id: str) -> str:
    """The run's page as the console shows it to a signed-in browser."""
    with signed_in(f"http://{console}", token) as web:
        answer = web.get(f"/runs/{run_id}")
        return answer.text if answer.status_code == 200 else ""


def report(demo: DemoSite, manager_address: str, token: str, work: Path, console: str) -> int:
    client = ManagerClient.connect(manager_address, token)
    runs = client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1)).jobs
    parent = runs[0]
    documents = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=parent.id, page_size=1000)).documents
    client.close()
    protected = [d for d in documents if SITE_HOST in d.url]
    authenticated = [d for d in protected if SIGNED_IN in d.text]
    offsite = demo.server.requests_to(OFFSITE_HOST)
    offsite_with_cookies = [r for r in offsite if r.cookie]
    site_requests = demo.server.requests_to(SITE_HOST)
    robots_with_cookies = [r for r in site_requests if r.path == "/robots.txt" and r.cookie]
    logout_requests = [r for r in site_requests if r.path == "/logout"]
    expected_pages = demo.pages + 1
    print("\nfetched:")
    for document in sorted(documents, key=lambda d: d.url):
        print(f"  {document.status_code} {document.url:48} {document.title}")
    checks = [
        (f"pages stored: {len(documents)} ({len(protected)} protected, {len(documents) - len(protected)} off-site)",
         len(protected) == expected_pages),
        (f"pages authenticated: {len(authenticated)} of {len(protected)}", len(authenticated) == expected_pages),
        (f"cookies offered to the off-site host: {len(offsite_with_cookies)} (requests to it: {len(offsite)})",
         not offsite_with_cookies and bool(offsite)),
        (f"robots.txt requests with cookies: {len(robots_with_cookies)}", not robots_with_cookies),
        (f"logout requests: {len(logout_requests)}", not logout_requests),
        (f"parent metadata auth_id: {parent.metadata['auth_id'] if 'auth_id' in parent.metadata else '(missing)'}",
         parent.metadata["auth_id"] == "demo" if "auth_id" in parent.metadata else False),
    ]
    page = console_view(console, token, parent.id)
    checks.append((f"the console shows the run ({len(page)} bytes), without the session cookie's value",
                   parent.id in page and "completed" in page and demo.session not in page))
    logs = [work / "manager.log", work / "executor.log", work / "console.log"]
    leaked = [path.name for path in logs if demo.session in path.read_text(errors="replace")]
    checks.append((f"session cookie value in the services' logs ({', '.join(p.name for p in logs)}): "
                   f"{'found in ' + ', '.join(leaked) if leaked else 'absent'}", not leaked))
    print()
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    passed = all(ok for _, ok in checks)
    print("\ndemo " + ("passed" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
