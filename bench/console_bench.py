"""The console at scale, against real service processes (manager, executor, console; SQLite, then
PostgreSQL):

1. Opening a run with 10,000 pages (1,000 failed with reasons, 10,000 log lines): GET /runs/ID as a
   signed-in browser, the failed pages' filter, and the runs list; median and p95 of 15 loads each.
   Target: a 10,000-page run opens in <= 1 s.
2. What watchers cost the manager while a run changes 50 times a second for 10 s: its CPU with no
   watcher, with 50 WatchJob streams of its own, and with 50 and 200 browsers on the console's live page.
   Target: 50 browsers cost the manager no more than 50 WatchJob streams do.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crawl_bench as crawl  # noqa: E402

from quaero.api.manager.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: E402
from quaero.client import ManagerClient  # noqa: E402
from quaero.convert import dict_to_struct  # noqa: E402
from quaero.testing.console import signed_in  # noqa: E402
from quaero.testing.processes import start_console, start_executor, start_manager  # noqa: E402
from quaero.testing.procfs import process_cpu  # noqa: E402

CHILDREN, FAILED, LOGS = 10_000, 1_000, 10_000
WINDOW, RATE, WATCHERS = 10.0, 50, 50


def big_run(client: ManagerClient) -> str:
    """Its pages are of a type no executor leases: they stay as made while the bench reads them."""
    jobs = client.jobs
    parent = jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawler", name="bench run",
                                                      config=dict_to_struct({"job_definition_id": "bench"})))
    ids: list[str] = []
    for start in range(0, CHILDREN, 500):
        answer = jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(parent_id=parent.id, children=[
            jobs_pb2.ChildJobSpec(type="bench_page", name=f"https://site.test/page/{n}", dedup_key=str(n))
            for n in range(start, start + 500)]))
        ids += [job.id for job in answer.jobs]
    for n, child in enumerate(ids[:FAILED]):
        jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=child, status=jobs_pb2.JOB_STATUS_RUNNING))
        jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
            job_id=child, status=jobs_pb2.JOB_STATUS_FAILED, error="the site did not answer in time",
            error_reason="FETCH_TIMEOUT" if n % 2 else "HTTP_STATUS"))
    jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=parent.id, status=jobs_pb2.JOB_STATUS_RUNNING))
    for n in range(LOGS):
        jobs.AddJobLog(jobs_pb2.AddJobLogRequest(job_id=ids[n % len(ids)], level=jobs_pb2.LOG_LEVEL_INFO,
                                                 message=f"fetched page {n}"))
    return parent.id


def timed(web: httpx.Client, path: str, headers: dict[str, str] | None = None, times: int = 15) -> list[float]:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        answer = web.get(path, headers=headers)
        seconds.append(time.perf_counter() - began)
        assert answer.status_code == 200, (path, answer.status_code)
    return seconds


def changing(client: ManagerClient, run_id: str, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        client.jobs.UpdateJobProgress(jobs_pb2.UpdateJobProgressRequest(job_id=run_id, progress_current=n,
                                                                        progress_total=1_000_000))
        time.sleep(1 / RATE)


async def until(stop: threading.Event, watchers: list[Coroutine[Any, Any, None]]) -> None:
    """The watchers, as tasks, until `stop` is set."""
    tasks = [asyncio.create_task(watcher) for watcher in watchers]
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()


async def watch_streams(manager: str, token: str, run_id: str, stop: threading.Event, count: int) -> int:
    seen = [0]
    async with grpc.aio.insecure_channel(manager) as channel:
        stub = jobs_pb2_grpc.JobManagerStub(channel)

        async def one() -> None:
            async for _job in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=run_id),
                                            metadata=(("authorization", f"Bearer {token}"),)):
                seen[0] += 1

        await until(stop, [one() for _ in range(count)])
    return seen[0]


async def browsers(console: str, cookies: dict[str, str], run_id: str, stop: threading.Event, count: int) -> int:
    seen = [0]
    async with httpx.AsyncClient(base_url=f"http://{console}", cookies=cookies, timeout=60) as client:
        async def one() -> None:
            async with client.stream("GET", f"/runs/{run_id}/events") as events:
                async for line in events.aiter_lines():
                    seen[0] += line.startswith("event: live")

        await until(stop, [one() for _ in range(count)])
    return seen[0]


def watch_cost(client: ManagerClient, manager_pid: int, console_pid: int, run_id: str,
               watchers: Callable[[threading.Event], int] | None) -> tuple[float, float, int]:
    """(manager CPU s, console CPU s, updates the watchers saw) over WINDOW seconds of changes."""
    stop = threading.Event()
    seen = [0]
    thread = None
    if watchers is not None:
        thread = threading.Thread(target=lambda: seen.__setitem__(0, watchers(stop)))
        thread.start()
        time.sleep(1.0)  # connected
    writer = threading.Thread(target=changing, args=(client, run_id, stop))
    manager_before, console_before = process_cpu(manager_pid), process_cpu(console_pid)
    writer.start()
    time.sleep(WINDOW)
    manager_cpu, console_cpu = process_cpu(manager_pid) - manager_before, process_cpu(console_pid) - console_before
    stop.set()
    writer.join()
    if thread is not None:
        thread.join(30)
    return manager_cpu, console_cpu, seen[0]


def one_database(name: str, url: str, runs: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": crawl.TOKEN, "QUAERO_DATABASE_URL": url}
        manager = start_manager(env)
        executor = start_executor(env, manager.address, extra=["--log-level", "WARNING"])
        console = start_console(env, manager.address, executor.address)
        client = ManagerClient.connect(manager.address, crawl.TOKEN, default_timeout=60)
        try:
            began = time.perf_counter()
            run_id = big_run(client)
            print(f"{name}: a run of {CHILDREN} pages ({FAILED} failed), {LOGS} log lines made in "
                  f"{time.perf_counter() - began:.1f} s", flush=True)
            with signed_in(f"http://{console.address}", crawl.TOKEN) as web:
                for label, path, headers in (
                        ("open the run", f"/runs/{run_id}", None),
                        ("failed pages (htmx)", f"/runs/{run_id}/children?status=failed", {"hx-request": "true"}),
                        ("FETCH_TIMEOUT pages", f"/runs/{run_id}/children?reason=FETCH_TIMEOUT", {"hx-request": "1"}),
                        ("runs list", "/runs", None)):
                    seconds = sorted(timed(web, path, headers))
                    print(f"  {label:22} median {1000 * statistics.median(seconds):6.1f} ms, p95 "
                          f"{1000 * seconds[int(0.95 * (len(seconds) - 1))]:6.1f} ms", flush=True)
                cookies = dict(web.cookies)
            setups: dict[str, Callable[[threading.Event], int] | None] = {
                "no watcher": None,
                f"{WATCHERS} WatchJob streams": lambda stop: asyncio.run(watch_streams(
                    manager.address, crawl.TOKEN, run_id, stop, WATCHERS)),
                f"{WATCHERS} console browsers": lambda stop: asyncio.run(browsers(
                    console.address, cookies, run_id, stop, WATCHERS)),
                f"{4 * WATCHERS} console browsers": lambda stop: asyncio.run(browsers(
                    console.address, cookies, run_id, stop, 4 * WATCHERS)),
            }
            results: dict[str, list[tuple[float, float, int]]] = {label: [] for label in setups}
            for _ in range(runs):
                for label, setup in setups.items():
                    results[label].append(watch_cost(client, manager.process.pid, console.process.pid, run_id, setup))
            print(f"  {RATE} changes/s for {WINDOW:.0f} s, medians of {runs}:")
            for label, found in results.items():
                print(f"  {label:24} manager CPU {statistics.median(r[0] for r in found):5.2f} s, console CPU "
                      f"{statistics.median(r[1] for r in found):5.2f} s, updates seen "
                      f"{statistics.median(r[2] for r in found):7.0f}", flush=True)
        finally:
            client.close()
            console.stop()
            executor.stop()
            manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=crawl.PG_ADMIN, help="admin URL; '' to skip PostgreSQL")
    args = parser.parse_args()
    one_database("sqlite", "", args.runs)
    if args.postgres:
        url, drop = crawl.fresh_postgres(args.postgres)
        try:
            one_database("postgres", url, args.runs)
        finally:
            drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
