"""Render benchmark: a single-page app of cookie-protected pages (quaero.testing.spa, in its own process:
every page is a script that fetch()es its title, text and links from an authenticated API and touches an
off-site host), crawled in the same run by a bare Playwright crawler (one browser context, pages reused,
no policy, no database) and by the full system with render = "js" (manager and executor processes on
SQLite), on the same browser binary at the same concurrency, waiting for pages to settle by the same rule.
The HTTP mode's crawl of the same app is run beside them: it finds only the first page's empty shell.

Each crawler runs --runs times, interleaved; the table holds medians: pages/s, the ratio to the bare
crawler, CPU per page of each process tree (the browser's processes counted with whoever started them)
and the browser's peak memory (PSS of the driver and every Chromium process)."""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from executor_service.render.browser import SETTLE_CAP_SECONDS, SETTLE_QUIET_SECONDS
from executor_service.render.chromium import chromium_path
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.procfs import comm, process_tree, tree_cpu
from quaero.testing.runs import run_to_end
from quaero.testing.spa import APP, OFF_SITE, SESSION

TOKEN = "bench-" + secrets.token_hex(8)
SECRET = secrets.token_urlsafe(16)


@dataclass
class Run:
    pages: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # process tree -> CPU seconds
    browser_mib: float = 0.0  # peak PSS of the browser's processes

    @property
    def rate(self) -> float:
        return self.pages / self.seconds


def start_site(pages: int) -> tuple[subprocess.Popen[str], int]:
    code = f"""
import sys
from quaero.testing.site import SiteServer
from quaero.testing.spa import SpaApp, OFF_SITE
app = SpaApp({pages}, {SECRET!r})
site = SiteServer(app).start()
app.off_site = f"http://{{OFF_SITE}}:{{site.port}}"
print(site.port, flush=True)
sys.stdin.read()
"""
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


# ---- /proc --------------------------------------------------------------------------------------------
def browser_pss_mib(root: int) -> float:
    total = 0
    for pid in process_tree(root):
        if comm(pid) not in ("chromium", "node"):
            continue
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class PeakMemory:
    def __init__(self, root: int) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(root,), daemon=True)
        self._thread.start()

    def _sample(self, root: int) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, browser_pss_mib(root))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


# ---- the bare Playwright crawler ----------------------------------------------------------------------
def bare_crawl(port: int, concurrency: int, limit: int, site_pid: int) -> Run:
    from playwright.async_api import async_playwright

    start = f"http://{APP}:{port}/"

    async def crawl() -> Run:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium_path(),
                args=[f"--host-resolver-rules=MAP {APP} 127.0.0.1, MAP {OFF_SITE} 127.0.0.1"])
            context = await browser.new_context()
            await context.add_cookies([{"name": SESSION, "value": SECRET, "domain": APP, "path": "/"}])
            seen, queue, fetched = {start}, asyncio.Queue[str](), 0
            queue.put_nowait(start)
            memory = PeakMemory(os.getpid())

            async def worker() -> None:
                nonlocal fetched
                page = await context.new_page()
                in_flight: set[object] = set()
                changed = [time.monotonic()]

                def began(request: object) -> None:
                    in_flight.add(request)
                    changed[0] = time.monotonic()

                def ended(request: object) -> None:
                    in_flight.discard(request)
                    changed[0] = time.monotonic()

                page.on("request", began)
                page.on("requestfinished", ended)
                page.on("requestfailed", ended)
                while True:
                    url = await queue.get()
                    try:
                        await page.goto(url, wait_until="domcontentloaded")
                        cap = time.monotonic() + SETTLE_CAP_SECONDS
                        while (in_flight or time.monotonic() - changed[0] < SETTLE_QUIET_SECONDS) and \
                                time.monotonic() < cap:
                            await asyncio.sleep(0.05)
                        await page.content()
                        fetched += 1
                        for href in await page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
                            if href.startswith(start) and href not in seen and len(seen) < limit:
                                seen.add(href)
                                queue.put_nowait(href)
                    finally:
                        queue.task_done()

            before = tree_cpu(os.getpid(), frozenset({site_pid}))  # (read while the browser runs: its processes are in the tree)
            began_at = time.perf_counter()
            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            await queue.join()
            seconds = time.perf_counter() - began_at
            cpu = tree_cpu(os.getpid(), frozenset({site_pid})) - before
            for task in workers:
                task.cancel()
            peak = memory.stop()
            await browser.close()
            return Run(fetched, seconds, {"bare": cpu}, peak)

    return asyncio.run(crawl())


# ---- Quaero -------------------------------------------------------------------------------------------
def quaero_crawl(port: int, pages: int, concurrency: int, render: int) -> Run:
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN,
               "QUAERO_RESOLVE": f"{APP}=127.0.0.1,{OFF_SITE}=127.0.0.1"}
        manager = start_manager(env)
        executor = start_executor(env, manager.address, extra=[
            "--workers", str(concurrency), "--browser-pages", str(concurrency), "--log-level", "WARNING"])
        try:
            client = ManagerClient.connect(manager.address, TOKEN)
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="bench", site_domain=APP, cookies=[
                auth_pb2.Cookie(name=SESSION, value=SECRET, domain=APP, path="/")]))
            definition = definitions_pb2.JobDefinition(id="bench", auth_id="bench", crawl=definitions_pb2.CrawlConfig(
                start_urls=[f"http://{APP}:{port}/"], max_depth=30, max_pages=pages, concurrency=concurrency,
                allowed_networks=["127.0.0.1/32"], render=render))  # type: ignore[arg-type]
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition))
            channel = open_channel(executor.address, TOKEN)
            roots = {"manager": manager.process.pid, "executor": executor.process.pid}
            before = {name: tree_cpu(pid) for name, pid in roots.items()}
            memory = PeakMemory(executor.process.pid)
            began = time.perf_counter()
            parent = run_to_end(channel, client, "bench")
            seconds = time.perf_counter() - began
            cpu = {name: tree_cpu(pid) - before[name] for name, pid in roots.items()}
            peak = memory.stop()
            documents = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
                parent_job_id=parent.id, page_size=1000)).documents
            stored = sum(1 for d in documents if "secret content" in d.text)
            channel.close()
            client.close()
            return Run(stored, seconds, cpu, peak)
        finally:
            executor.stop()
            manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2, help="pages at once (browser pages)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each crawler, interleaved (medians)")
    args = parser.parse_args()
    site, port = start_site(args.pages)
    results: dict[str, list[Run]] = {"bare": [], "js": [], "http": []}
    try:
        for round_number in range(args.runs):
            for name in results:
                if name == "bare":
                    run = bare_crawl(port, args.concurrency, args.pages, site.pid)
                else:
                    mode = definitions_pb2.RENDER_MODE_JS if name == "js" else definitions_pb2.RENDER_MODE_HTTP
                    run = quaero_crawl(port, args.pages, args.concurrency, mode)
                cpu = ", ".join(f"{k} {v:.2f} s" for k, v in run.cpu.items())
                print(f"round {round_number + 1} {name:5} {run.pages} pages with content in {run.seconds:.2f} s = "
                      f"{run.rate:.2f}/s (CPU {cpu}; browser peak {run.browser_mib:.0f} MiB)", flush=True)
                results[name].append(run)
    finally:
        site.terminate()
        site.wait()
    labels = {"bare": "bare Playwright (one context, no policy)", "js": 'Quaero, render = "js" (SQLite)',
              "http": 'Quaero, render = "http" (SQLite)'}
    bare = statistics.median(r.rate for r in results["bare"])
    print(f"\nmedians of {args.runs} runs each; {args.pages} pages, {args.concurrency} at once")
    print("| crawler | pages with content | pages/s | × bare | CPU per page (ms) | browser peak PSS |")
    print("|---|---:|---:|---:|---|---:|")
    for name, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        per_page = ", ".join(f"{tree_name} {statistics.median(1000 * r.cpu[tree_name] / max(r.pages, 1) for r in runs):.0f}"
                             for tree_name in runs[0].cpu)
        memory = statistics.median(r.browser_mib for r in runs)
        print(f"| {labels[name]} | {statistics.median(r.pages for r in runs):.0f} | {rate:.2f} | {rate / bare:.2f} | "
              f"{per_page} | {f'{memory:.0f} MiB' if memory else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
