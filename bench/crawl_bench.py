"""Crawl benchmark: a local site of 1,000 cookie-protected pages, crawled by the full system (manager +
executor processes, concurrency 16) and by a bare async httpx crawler with the same concurrency and
cookies, in the same run. Prints pages/s of both, the ratio, and the executor's peak RSS."""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.processes import start_executor, start_manager

HOST = "bench.site.test"
TOKEN = "bench-" + secrets.token_hex(8)
SESSION = secrets.token_urlsafe(16)
HREF = re.compile(r'href="([^"]+)"')


def start_site(pages: int) -> tuple[subprocess.Popen[str], int]:
    """The site runs in its own process so that it does not share a GIL with either crawler."""
    code = f"""
import sys
from quaero.testing.site import Response, SiteServer
PAGES, SESSION = {pages}, {SESSION!r}
def handle(request):
    if "session=" + SESSION not in request.cookie:
        return Response(status=302, headers=[("Location", "/login")])
    if request.path == "/robots.txt":
        return Response(body="User-agent: *\\nAllow: /\\n", content_type="text/plain")
    n = int(request.path.rsplit("/", 1)[1]) if request.path.startswith("/p/") else 0
    links = " ".join(f'<a href="/p/{{k}}">{{k}}</a>' for k in (2 * n + 1, 2 * n + 2, (n * 7 + 3) % PAGES) if k < PAGES)
    return Response(body=f"<html><title>Page {{n}}</title><body><p>Members only {{n}}</p>{{links}}</body></html>")
site = SiteServer(handle).start()
print(site.port, flush=True)
sys.stdin.read()
"""
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


async def bare_crawl(start: str, port: int, concurrency: int, limit: int) -> int:
    """The baseline: BFS with httpx.AsyncClient, a fixed Cookie header, no database, no gRPC."""
    seen = {start}
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait(start)
    fetched = 0
    transport = httpx.AsyncHTTPTransport(retries=1)

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

    async with httpx.AsyncClient(transport=transport, limits=httpx.Limits(max_connections=concurrency)) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        await queue.join()
        for task in workers:
            task.cancel()
    return fetched


def full_system(port: int, pages: int, concurrency: int, work: Path) -> tuple[int, float, int, dict[str, float]]:
    env = {"QUAERO_DATA_DIR": str(work), "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": "",
           "QUAERO_RESOLVE": f"{HOST}=127.0.0.1"}
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", str(concurrency), "--log-level", "WARNING"])
    try:
        client = ManagerClient.connect(manager.address, TOKEN)
        client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="bench", site_domain=HOST, cookies=[
            auth_pb2.Cookie(name="session", value=SESSION, domain=HOST, path="/")]))
        definition = definitions_pb2.JobDefinition(id="bench", auth_id="bench", crawl=definitions_pb2.CrawlConfig(
            start_urls=[f"http://{HOST}:{port}/"], max_depth=30, max_pages=pages, concurrency=concurrency,
            ignore_robots_txt=True, allowed_networks=["127.0.0.1/32"]))
        client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition))
        channel = open_channel(executor.address, TOKEN)
        began = time.perf_counter()
        started = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
            executor_pb2.ExecuteJobDefinitionRequest(definition_id="bench"))
        for update in client.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=started.parent_job_id)):
            if update.status not in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING):
                break
        elapsed = time.perf_counter() - began
        stored, token = 0, ""
        while True:
            page = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
                parent_job_id=started.parent_job_id, page_size=1000, page_token=token, omit_text=True))
            stored += sum(1 for d in page.documents if "Page" in d.title)
            token = page.next_page_token
            if not token:
                break
        cpu_seconds: dict[str, float] = {}
        for name, pid in (("manager", manager.process.pid), ("executor", executor.process.pid)):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_seconds[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            print(f"{name} CPU: {cpu_seconds[name]:.2f} s", flush=True)
        status = Path(f"/proc/{executor.process.pid}/status").read_text()
        peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        channel.close()
        client.close()
        return stored, elapsed, peak_kib, cpu_seconds
    finally:
        executor.stop()
        manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    site, port = start_site(args.pages)
    try:
        began = time.perf_counter()
        bare = asyncio.run(bare_crawl(f"http://{HOST}:{port}/", port, args.concurrency, args.pages))
        bare_seconds = time.perf_counter() - began
        with tempfile.TemporaryDirectory() as tmp:
            stored, seconds, peak_kib, cpu_seconds = full_system(port, args.pages, args.concurrency, Path(tmp))
    finally:
        site.terminate()
        site.wait()
    bare_rate, full_rate = bare / bare_seconds, stored / seconds
    print(f"bare httpx crawler: {bare} pages in {bare_seconds:.2f} s = {bare_rate:.0f} pages/s")
    print(f"full system:        {stored} pages in {seconds:.2f} s = {full_rate:.0f} pages/s")
    per_page = ", ".join(f"{name} {1000 * cpu / max(stored, 1):.1f} ms" for name, cpu in cpu_seconds.items())
    print("\n| crawler | pages | seconds | pages/s | × bare | CPU per page | executor peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| bare async httpx (baseline) | {bare} | {bare_seconds:.2f} | {bare_rate:.0f} | 1.00 | - | - |")
    print(f"| Quaero (manager + executor, SQLite) | {stored} | {seconds:.2f} | {full_rate:.0f} | "
          f"{full_rate / bare_rate:.2f} | {per_page} | {peak_kib / 1024:.0f} MiB |")
    return 0 if stored == bare == args.pages else 1


if __name__ == "__main__":
    sys.exit(main())
