"""The console in Debian's Chromium: what an operator clicks, what arrives live, and what never arrives
(secrets, script from a crawled site, a cross-site form)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.site import Request, Response, html

from .conftest import Stack, Visit

pytestmark = pytest.mark.timeout(120)


def slow_chain(stack: Stack, pages: int, delay: float, host: str = "127.0.0.1") -> str:
    """/p/0 → /p/1 → … each answering after `delay` s; the start URL."""
    def page(n: int) -> Any:
        def handle(_request: Request) -> Response:
            time.sleep(delay)
            return html(f"chain page {n}", *([f"/p/{n + 1}"] if n + 1 < pages else []))
        return handle

    site = stack.harness.site({(host, f"/p/{n}"): page(n) for n in range(pages)})
    return f"http://{host}:{site.port}/p/0"


def test_sign_in_is_required_and_the_cookie_is_strict(visit: Visit) -> None:
    visit.go("/runs")
    assert "/login" in visit.page.url
    visit.page.get_by_label("Operator token").fill("not-the-token")
    visit.page.get_by_role("button", name="Sign in").click()
    assert "not the operator token" in visit.page.get_by_role("alert").inner_text()
    visit.sign_in()
    assert visit.page.get_by_role("heading", name="Runs").is_visible()
    cookies = visit.page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("quaero_console", True, "Strict")]
    visit.page.get_by_role("button", name="Sign out").click()
    visit.go("/definitions")
    assert "/login" in visit.page.url


def test_start_a_run_and_watch_it_live_with_no_reload(visit: Visit, stack: Stack) -> None:
    start = slow_chain(stack, pages=14, delay=0.3, host="app.site.test")
    definition = stack.harness.definition([start], concurrency=1, max_depth=20)
    visit.sign_in()
    visit.go(f"/definitions/{definition}")
    visit.page.get_by_role("button", name="Run now").click()
    visit.page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
    run_id = visit.page.url.rsplit("/", 1)[1]
    navigations: list[str] = []
    visit.page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame.parent_frame is None else None)
    visit.page.evaluate("""() => { window.__live = [];
        document.body.addEventListener('htmx:sseMessage', e => window.__live.push([e.detail.type, performance.now()])); }""")
    first = visit.page.locator("#run-progress-text").inner_text()
    visit.page.wait_for_function("t => document.querySelector('#run-progress-text').innerText !== t", arg=first)
    visit.page.wait_for_function("() => document.querySelectorAll('#log-lines li').length > 3")
    visit.page.wait_for_function("() => document.querySelector('#run-status').innerText === 'completed'", timeout=60_000)
    assert navigations == [], "the page reloaded"
    done = stack.harness.client.get_job(run_id)
    assert visit.page.locator("#run-progress-text").inner_text() == f"{done.progress_current} of {done.progress_total} pages"
    assert visit.page.locator("#count-completed").inner_text() == "14"
    live = [moment for kind, moment in visit.page.evaluate("window.__live") if kind == "live"]
    assert len(live) >= 2
    gaps = [b - a for a, b in zip(live, live[1:], strict=False)]
    assert min(gaps) >= 400, f"updates closer than the 2-a-second limit allows: {gaps}"
    assert not visit.errors, visit.errors


def test_filter_the_failed_pages_and_read_their_verdict(visit: Visit, stack: Stack) -> None:
    def slow(_request: Request) -> Response:
        time.sleep(1.5)
        return html("too late")

    site = stack.harness.site({
        ("127.0.0.1", "/"): html("home", "/ok/1", "/ok/2", "/slow/1", "/slow/2", "http://127.0.0.1:9/closed"),
        ("127.0.0.1", "/ok/1"): html("fine"), ("127.0.0.1", "/ok/2"): html("fine too"),
        ("127.0.0.1", "/slow/1"): slow, ("127.0.0.1", "/slow/2"): slow,
    })
    outcome = stack.harness.crawl([f"http://127.0.0.1:{site.port}/"], max_child_failures=10,
                                  request_timeout_seconds=0.5, same_site_only=False)
    failed = [child for child in outcome.children if child.status == jobs_pb2.JOB_STATUS_FAILED]
    slow_reason = next(child.error_reason for child in failed if "/slow/" in child.name)
    assert len(failed) == 3 and len({child.error_reason for child in failed}) == 2, failed
    visit.sign_in()
    visit.go(f"/runs/{outcome.parent.id}")
    assert visit.page.locator("#children-table tbody tr").count() == 6
    visit.page.get_by_label("Status", exact=True).last.select_option("failed")
    visit.page.get_by_role("button", name="Filter").click()
    visit.page.wait_for_function("() => document.querySelectorAll('#children-table tbody tr').length === 3")
    rows = visit.page.locator("#children-table tbody tr").all_inner_texts()
    for child in failed:
        row = next(row for row in rows if child.name in row)
        assert "failed" in row and f"{child.error_reason}: {child.error}" in row, row
    visit.page.get_by_label("Reason").fill(slow_reason)
    visit.page.get_by_role("button", name="Filter").click()
    visit.page.wait_for_function("() => document.querySelectorAll('#children-table tbody tr').length === 2")
    assert all("/slow/" in row for row in visit.page.locator("#children-table tbody tr").all_inner_texts())
    visit.page.get_by_label("Reason").fill("NO_SUCH_REASON")
    visit.page.get_by_role("button", name="Filter").click()
    visit.page.wait_for_function("() => document.querySelector('#children-table tbody').innerText.includes('No pages')")


def test_cancel_a_run(visit: Visit, stack: Stack) -> None:
    start = slow_chain(stack, pages=60, delay=0.5)
    definition = stack.harness.definition([start], concurrency=1, max_depth=100)
    run_id = stack.harness.start(definition).parent_job_id
    visit.sign_in()
    visit.go(f"/runs/{run_id}")
    visit.page.get_by_role("button", name="Cancel this run").click()
    visit.page.wait_for_url(re.compile(f".*/runs/{run_id}$"))
    visit.page.wait_for_function("() => document.querySelector('#run-status').innerText === 'cancelled'")
    assert stack.harness.client.get_job(run_id).status == jobs_pb2.JOB_STATUS_CANCELLED
    assert visit.page.get_by_role("button", name="Cancel this run").count() == 0


def test_search_documents_and_read_one(visit: Visit, stack: Stack) -> None:
    site = stack.harness.site({
        ("127.0.0.1", "/"): html("Index", "/whale", "/cat"),
        ("127.0.0.1", "/whale"): html("Moby", body="Call me Ishmael. The whale surfaced at dawn.\n\nA second paragraph."),
        ("127.0.0.1", "/cat"): html("Cat", body="The cat slept all day."),
    })
    stack.harness.crawl([f"http://127.0.0.1:{site.port}/"])
    visit.sign_in()
    visit.go("/documents")
    visit.page.get_by_label("Search", exact=True).fill("ishmael")
    visit.page.get_by_role("button", name="Search").click()
    hits = visit.page.locator("#hits > li")
    assert hits.count() == 1
    assert visit.page.locator("#hits mark").first.inner_text().lower() == "ishmael"
    hits.get_by_role("link", name="Moby").click()
    assert visit.page.get_by_role("heading", name="Moby", level=1).is_visible()
    assert "Call me Ishmael" in visit.page.locator(".document-text").inner_text()


def test_import_credentials_shows_names_and_expiry_and_never_a_value(visit: Visit, stack: Stack,
                                                                     tmp_path: Path) -> None:
    secret, other = "s3cr3t-" + "v" * 20, "an0ther-" + "w" * 20
    soonest = int(time.time()) + 10 * 86400
    export = tmp_path / "cookies.json"
    export.write_text(json.dumps([
        {"name": "session", "value": secret, "domain": "app.site.test", "hostOnly": True, "path": "/",
         "secure": True, "httpOnly": True, "expirationDate": int(time.time()) + 20 * 86400},
        {"name": "prefs", "value": other, "domain": ".app.site.test", "hostOnly": False, "path": "/",
         "secure": False, "httpOnly": False, "expirationDate": soonest}]))
    visit.sign_in()
    visit.go("/credentials")
    visit.page.get_by_label("Site (e.g. example.com)").fill("app.site.test")
    visit.page.get_by_label("Id to store them under", exact=False).fill("members")
    visit.page.get_by_label("Cookie export", exact=False).set_input_files(str(export))
    visit.page.get_by_role("button", name="Import").click()
    assert "Stored 2 cookies for app.site.test as members" in visit.page.get_by_role("status").inner_text()
    row = visit.page.locator("tr", has_text="members")
    assert "session" in row.inner_text() and "prefs" in row.inner_text()
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(soonest))
    assert shown in row.inner_text()  # the earliest expiry: the prefs cookie's
    visit.go("/credentials")
    everything = visit.received() + visit.page.content()
    assert secret not in everything and other not in everything
    visit.page.get_by_role("button", name="Delete the credentials members").click()
    assert visit.page.locator("tr", has_text="members").count() == 0


def test_a_hostile_page_is_shown_as_text_and_runs_nothing(visit: Visit, stack: Stack) -> None:
    title = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
    quoted = "/q\"uote'd?x=<b>"
    site = stack.harness.site({
        ("127.0.0.1", "/"): Response(body=f"<html><head><title>{title.replace('<', '&lt;')}</title></head><body>"
                                          f"<p>&lt;svg onload=window.__pwned=3&gt; hello hostile</p>"
                                          f"<a href='{quoted}'>x</a></body></html>"),
        ("127.0.0.1", "/q\"uote'd"): html("quoted"),
    })
    outcome = stack.harness.crawl([f"http://127.0.0.1:{site.port}/"])
    home = next(d for d in outcome.documents if d.url.endswith("/"))
    assert home.title == title  # the crawler kept it as text; now the console must show it as text
    dialogs: list[str] = []
    visit.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    visit.sign_in()
    for path in (f"/runs/{outcome.parent.id}", f"/runs/{outcome.parent.id}/documents", f"/documents/{home.id}",
                 "/documents?q=hostile"):
        visit.go(path)
        assert visit.page.evaluate("window.__pwned") is None, path
        assert visit.page.locator("main img, main svg, main script").count() == 0, path
    visit.go(f"/documents/{home.id}")
    assert visit.page.get_by_role("heading", level=1).inner_text() == title
    visit.go(f"/runs/{outcome.parent.id}/documents")
    assert any("uote" in url for url in visit.page.locator("td.url").all_inner_texts())
    assert not dialogs


def test_a_post_without_the_csrf_token_is_refused(visit: Visit, stack: Stack) -> None:
    start = slow_chain(stack, pages=1, delay=0)
    definition = stack.harness.definition([start])
    visit.sign_in()
    status = visit.page.evaluate(f"fetch('/definitions/{definition}/run', {{method: 'POST'}}).then(r => r.status)")
    assert status == 403
    wrong = visit.page.evaluate(f"""fetch('/definitions/{definition}/run', {{method: 'POST',
        headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf=guess'}}).then(r => r.status)""")
    assert wrong == 403
    runs = stack.harness.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id=definition)).jobs
    assert list(runs) == []


AXE_PAGES = ["/runs", "/definitions", "/credentials", "/documents?q=page", "/health"]


def test_no_serious_or_critical_accessibility_violations(visit: Visit, stack: Stack) -> None:
    from axe_playwright_python import __file__ as axe_package

    axe = (Path(axe_package).parent / "axe.min.js").read_text()
    site = stack.harness.site({("127.0.0.1", "/"): html("home page", "/next"),
                               ("127.0.0.1", "/next"): Response(status=500)})
    outcome = stack.harness.crawl([f"http://127.0.0.1:{site.port}/"], max_child_failures=5)
    document = outcome.documents[0]
    visit.go("/login")
    pages = ["/login"]
    visit.sign_in()
    pages += [*AXE_PAGES, f"/runs/{outcome.parent.id}", f"/runs/{outcome.parent.id}/documents",
              f"/definitions/{outcome.parent.definition_id}", f"/documents/{document.id}"]
    problems = []
    for path in pages:
        if path != "/login":
            visit.go(path)
        else:
            visit.page.context.clear_cookies()
            visit.go("/login")
        visit.page.evaluate(axe)  # evaluated by the test, not loaded by the page: its CSP stays as it is
        result = visit.page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        problems += [f"{path}: {v['id']} ({v['impact']}): {v['help']}" for v in result["violations"]
                     if v["impact"] in ("serious", "critical")]
        if path == "/login":
            visit.sign_in()
    assert not problems, "\n".join(problems)
