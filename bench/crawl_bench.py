"""Crawl benchmark: one local site of cookie-protected pages (its own process), crawled in the same run by
Scrapy (robots.txt obeyed, no delay), a bare async httpx crawler (no robots.txt, no database, no gRPC) and
the full system (manager + executor processes, robots.txt obeyed, a durable job per page) on SQLite and
on PostgreSQL, all at the same concurrency with the same session cookie. Each crawler runs --runs times,
interleaved; the table holds medians: pages/s, the ratio to Scrapy and to the bare crawler, and CPU per
page of each process (manager, executor, database: the PostgreSQL server's processes)."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.metrics import rpc_counts, scrape
from quaero.testing.otlp import OtlpReceiver
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.procfs import named_cpu, process_cpu, rss_mib
from quaero.testing.runs import run_to_end

HOST = "bench.site.test"
TOKEN = "bench-" + secrets.token_hex(8)
SESSION = secrets.token_urlsafe(16)
HREF = re.compile(r'href="([^"]+)"')
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Run:
    pages: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    peak_mib: float = 0.0
    calls: dict[str, float] = field(default_factory=dict)  # manager RPC method -> calls answered

    @property
    def rate(self) -> float:
        return self.pages / self.seconds


def start_site(pages: int, sliding: bool = False) -> tuple[subprocess.Popen[str], int]:
    """The site runs in its own process so that it does not share a GIL with any crawler. `sliding`: every
    signed-in answer re-sets the session cookie with a fresh lifetime (a sliding session)."""
    code = f"""
import sys
from quaero.testing.site import Response, SiteServer
PAGES, SESSION, SLIDING = {pages}, {SESSION!r}, {sliding!r}
def handle(request):
    if request.path == "/robots.txt":
        return Response(body="User-agent: *\\nDisallow: /private/\\n", content_type="text/plain")
    if "session=" + SESSION not in request.cookie:
        return Response(status=302, headers=[("Location", "/login")])
    n = int(request.path.rsplit("/", 1)[1]) if request.path.startswith("/p/") else 0
    links = " ".join(f'<a href="/p/{{k}}">{{k}}</a>' for k in (2 * n + 1, 2 * n + 2, (n * 7 + 3) % PAGES) if 0 < k < PAGES)
    headers = [("Set-Cookie", "session=" + SESSION + "; Path=/; Max-Age=600; HttpOnly")] if SLIDING else []
    return Response(body=f"<html><title>Page {{n}}</title><body><p>Members only {{n}}</p>{{links}}</body></html>",
                    headers=headers)
site = SiteServer(handle).start()
print(site.port, flush=True)
sys.stdin.read()
"""
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def postgres_cpu() -> float:
    """CPU of every PostgreSQL server process so far (the benchmark runs alone on the server)."""
    return named_cpu("postgres")


def scrapy_crawl(port: int, concurrency: int) -> Run:
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("scrapy_baseline.py")), str(port), SESSION,
                             str(concurrency)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"scrapy failed: {result.stderr[-2000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return Run(found["pages"], found["seconds"], {"scrapy": found["cpu_seconds"]})


def bare_crawl(port: int, concurrency: int, limit: int) -> Run:
    """BFS with httpx.AsyncClient, a fixed Cookie header, no robots.txt, no database, no gRPC."""
    start = f"http://{HOST}:{port}/"

    async def crawl() -> int:
        seen = {start}
        queue: asyncio.Queue[str] = asyncio.Queue()
        queue.put_nowait(start)
        fetched = 0

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal fetched
            while True:
                url = await queue.get()
                try:
                    response = await client.get(url.replace(HOST, "127.0.0.1"), headers={
                        "Host": f"{HOST}:{port}", "Cookie": f"session={SESSION}"})
                    fetched += 1
                    for link in HREF.findall(response.text):
                        absolute = f"http://{HOST}:{port}{link}"
                        if absolute not in seen and len(seen) < limit:
                            seen.add(absolute)
                            queue.put_nowait(absolute)
                finally:
                    queue.task_done()

        transport = httpx.AsyncHTTPTransport(retries=1)
        async with httpx.AsyncClient(transport=transport, limits=httpx.Limits(max_connections=concurrency)) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
            await queue.join()
            for task in workers:
                task.cancel()
        return fetched

    usage = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    fetched = asyncio.run(crawl())
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Run(fetched, seconds, {"bare": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime})


def quaero_crawl(port: int, pages: int, concurrency: int, database_url: str,
                 tracing: dict[str, str] | None = None) -> Run:
    """`tracing`: the OTEL_* variables that turn tracing on (every span sampled and exported)."""
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": database_url,
               "QUAERO_RESOLVE": f"{HOST}=127.0.0.1", **(tracing or {})}
        manager = start_manager(env, extra=["--metrics-listen", "127.0.0.1:0"])
        executor = start_executor(env, manager.address, extra=["--workers", str(concurrency), "--log-level",
                                                                "WARNING"])
        try:
            return _run_definition(manager, executor, port, pages, concurrency, bool(database_url))
        finally:
            executor.stop()
            manager.stop()


def _run_definition(manager: object, executor: object, port: int, pages: int, concurrency: int,
                    postgres: bool) -> Run:
    address, executor_address = manager.address, executor.address  # type: ignore[attr-defined]
    client = ManagerClient.connect(address, TOKEN)
    client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="bench", site_domain=HOST, cookies=[
        auth_pb2.Cookie(name="session", value=SESSION, domain=HOST, path="/")]))
    definition = definitions_pb2.JobDefinition(id="bench", auth_id="bench", crawl=definitions_pb2.CrawlConfig(
        start_urls=[f"http://{HOST}:{port}/"], max_depth=30, max_pages=pages, concurrency=concurrency,
        allowed_networks=["127.0.0.1/32"]))
    client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition))
    channel = open_channel(executor_address, TOKEN)
    pids = {"manager": manager.process.pid, "executor": executor.process.pid}  # type: ignore[attr-defined]
    calls_before = rpc_counts(scrape(manager.banner))  # type: ignore[attr-defined]
    before = {name: process_cpu(pid) for name, pid in pids.items()}
    database_before = postgres_cpu() if postgres else 0.0
    began = time.perf_counter()
    parent = run_to_end(channel, client, "bench")
    seconds = time.perf_counter() - began
    cpu = {name: process_cpu(pid) - before[name] for name, pid in pids.items()}
    if postgres:
        cpu["database"] = postgres_cpu() - database_before
    calls = {method: count - calls_before.get(method, 0.0)
             for method, count in rpc_counts(scrape(manager.banner)).items()}  # type: ignore[attr-defined]
    stored, token = 0, ""
    while True:
        page = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=parent.id, page_size=1000, page_token=token, omit_text=True))
        stored += sum(1 for d in page.documents if "Page" in d.title)
        token = page.next_page_token
        if not token:
            break
    peak = rss_mib(pids["executor"], peak=True)
    channel.close()
    client.close()
    return Run(stored, seconds, cpu, peak, calls)


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    name = "quaero_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name, drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="runs of each crawler, interleaved (medians)")
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server; '' to skip it")
    parser.add_argument("--only", default="", help="comma-separated crawlers: scrapy,bare,sqlite,postgres,traced "
                        "(SQLite with tracing on: every span exported over OTLP to a receiver that drops them)")
    parser.add_argument("--sliding", action="store_true", help="the site re-sets its session cookie on every "
                        "answer (a sliding session: the run's session absorbs a cookie per page)")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {"scrapy", "bare", "sqlite", "postgres", "traced"}
    if not args.postgres:
        chosen.discard("postgres")
    site, port = start_site(args.pages, args.sliding)
    results: dict[str, list[Run]] = {name: [] for name in ("scrapy", "bare", "sqlite", "postgres", "traced")
                                     if name in chosen}
    receiver = OtlpReceiver(keep=False).start() if "traced" in chosen else None
    try:
        for round_number in range(args.runs):
            for name in results:
                site_before = process_cpu(site.pid)
                if name == "scrapy":
                    run = scrapy_crawl(port, args.concurrency)
                elif name == "bare":
                    run = bare_crawl(port, args.concurrency, args.pages)
                elif name == "sqlite":
                    run = quaero_crawl(port, args.pages, args.concurrency, "")
                elif name == "traced":
                    assert receiver is not None
                    run = quaero_crawl(port, args.pages, args.concurrency, "", {
                        # (The SDK's own export interval, not the tests' prompt 200 ms: exporting 5 times a
                        # second cost the crawl twice as much CPU, +16% against +8%.)
                        **receiver.env(), "OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "5000"})
                else:
                    url, drop = fresh_postgres(args.postgres)
                    try:
                        run = quaero_crawl(port, args.pages, args.concurrency, url)
                    finally:
                        drop()
                run.cpu["site"] = process_cpu(site.pid) - site_before  # the same site serves every crawler
                cpu = ", ".join(f"{k} {v:.2f} s" for k, v in run.cpu.items())
                print(f"round {round_number + 1} {name:8} {run.pages} pages in {run.seconds:.2f} s = {run.rate:.0f}/s "
                      f"(CPU {cpu})", flush=True)
                results[name].append(run)
    finally:
        site.terminate()
        site.wait()
        if receiver is not None:
            receiver.stop()
    print_table(results, args.runs)
    return 0


def median_rate(runs: list[Run]) -> float:
    return statistics.median(run.rate for run in runs)


def print_table(results: dict[str, list[Run]], runs: int) -> None:
    labels = {"scrapy": "Scrapy (robots.txt obeyed)", "bare": "bare async httpx (no robots.txt)",
              "sqlite": "Quaero, SQLite", "postgres": "Quaero, PostgreSQL",
              "traced": "Quaero, SQLite, tracing on (every span exported)"}
    scrapy = median_rate(results["scrapy"]) if results.get("scrapy") else None
    bare = median_rate(results["bare"]) if results.get("bare") else None
    print(f"\nmedians of {runs} runs each")
    print("| crawler | pages | pages/s (min–max) | × Scrapy | × bare | CPU per page (ms) | executor peak RSS |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, measured in results.items():
        rate = median_rate(measured)
        names = list(measured[0].cpu)
        per_page = ", ".join(f"{process} {statistics.median(1000 * r.cpu[process] / max(r.pages, 1) for r in measured):.1f}"
                             for process in names)
        peak = f"{statistics.median(r.peak_mib for r in measured):.0f} MiB" if measured[0].peak_mib else "-"
        rates = [r.rate for r in measured]
        print(f"| {labels[name]} | {measured[0].pages} | {rate:.0f} ({min(rates):.0f}–{max(rates):.0f}) | "
              f"{rate / scrapy:.2f} | " if scrapy else f"| {labels[name]} | {measured[0].pages} | {rate:.0f} | - | ",
              end="")
        print(f"{rate / bare:.2f} | {per_page} | {peak} |" if bare else f"- | {per_page} | {peak} |")
    if results.get("traced") and results.get("sqlite"):
        def cpu_per_page(runs: list[Run]) -> float:
            return statistics.median(1000 * (r.cpu["manager"] + r.cpu["executor"]) / max(r.pages, 1) for r in runs)

        plain, traced = cpu_per_page(results["sqlite"]), cpu_per_page(results["traced"])
        speed = median_rate(results["traced"]) / median_rate(results["sqlite"]) - 1
        print(f"tracing on (every span exported): pages/s {speed:+.1%}, "
              f"manager + executor CPU per page {plain:.2f} -> {traced:.2f} ms ({traced / plain - 1:+.1%})")
    for name, measured in results.items():
        if measured[0].calls:
            methods = sorted({method for run in measured for method in run.calls})
            calls = {m: statistics.median(r.calls.get(m, 0.0) / max(r.pages, 1) for r in measured) for m in methods}
            listed = ", ".join(f"{m} {v:.2f}" for m, v in sorted(calls.items(), key=lambda item: -item[1]) if v >= 0.005)
            print(f"{labels[name]}: manager calls per page {sum(calls.values()):.2f} ({listed})")


if __name__ == "__main__":
    sys.exit(main())
