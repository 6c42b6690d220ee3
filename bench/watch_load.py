"""WatchJob under load: the same crawl as bench/crawl_bench.py (1,000 pages, concurrency 16, its own site
process) with no watcher and with N WatchJob streams on the run (from another process), on SQLite and
on PostgreSQL, interleaved. Prints the crawl's slowdown with watchers, the manager's CPU and peak RSS,
and whether every watcher saw the final state."""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import crawl_bench as crawl  # noqa: E402

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc  # noqa: E402
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2  # noqa: E402
from quaero.client import ManagerClient  # noqa: E402
from quaero.rpc.channel import open_channel  # noqa: E402
from quaero.testing.processes import start_executor, start_manager  # noqa: E402
from quaero.testing.procfs import process_cpu  # noqa: E402

WATCHERS = """
import asyncio, resource, sys
import grpc
from quaero.api.manager.v1 import jobs_pb2, jobs_pb2_grpc
address, token, job_id, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    # One process holds the 1,000 streams as coroutines on one grpc.aio channel (as a dashboard's
    # backend would), not 1,000 threads: the watchers share the machine's two cores with the crawl.
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobManagerStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        async def watch():
            last = None
            async for job in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), metadata=metadata, timeout=600):
                last = job
            return last.status if last is not None else 0
        tasks = [asyncio.create_task(watch()) for _ in range(count)]
        print("watching", flush=True)
        final = await asyncio.gather(*tasks)
    done = sum(1 for status in final if status == jobs_pb2.JOB_STATUS_COMPLETED)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"final {done} {count} {usage.ru_utime + usage.ru_stime:.3f}", flush=True)

asyncio.run(main())
"""


def peak_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def one_crawl(port: int, pages: int, watchers: int, database_url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": crawl.TOKEN, "QUAERO_DATABASE_URL": database_url,
               "QUAERO_RESOLVE": f"{crawl.HOST}=127.0.0.1"}
        manager = start_manager(env)
        executor = start_executor(env, manager.address, extra=["--workers", "16", "--log-level", "WARNING"])
        watching = None
        try:
            client = ManagerClient.connect(manager.address, crawl.TOKEN)
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="bench", site_domain=crawl.HOST, cookies=[
                auth_pb2.Cookie(name="session", value=crawl.SESSION, domain=crawl.HOST)]))
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="bench", auth_id="bench", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://{crawl.HOST}:{port}/"], max_depth=30, max_pages=pages, concurrency=16,
                    allowed_networks=["127.0.0.1/32"]))))
            channel = open_channel(executor.address, crawl.TOKEN)
            cpu_before = process_cpu(manager.process.pid)
            began = time.perf_counter()
            started = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
                executor_pb2.ExecuteJobDefinitionRequest(definition_id="bench"))
            if watchers:
                watching = subprocess.Popen([sys.executable, "-c", WATCHERS, manager.address, crawl.TOKEN,
                                             started.parent_job_id, str(watchers)], stdout=subprocess.PIPE, text=True)
                assert watching.stdout is not None
                watching.stdout.readline()
            while True:
                job = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=started.parent_job_id))
                if job.status not in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING):
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - began
            seen_final, watchers_cpu = 1.0, 0.0
            if watching is not None:
                assert watching.stdout is not None
                line = watching.stdout.readline().split()
                seen_final = int(line[1]) / int(line[2])
                watchers_cpu = float(line[3])
                watching.wait(60)
            result = {"seconds": seconds, "manager_cpu": process_cpu(manager.process.pid) - cpu_before,
                      "manager_mib": peak_mib(manager.process.pid), "seen_final": seen_final,
                      "watchers_cpu": watchers_cpu,
                      "threads": len(list(Path(f"/proc/{manager.process.pid}/task").iterdir()))}
            channel.close()
            client.close()
            return result
        finally:
            if watching is not None and watching.poll() is None:
                watching.kill()
            executor.stop()
            manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=crawl.PG_ADMIN, help="admin URL; '' to skip PostgreSQL")
    args = parser.parse_args()
    site, port = crawl.start_site(args.pages)
    databases = ["sqlite"] + (["postgres"] if args.postgres else [])
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for _ in range(args.runs):
            for database in databases:
                for watchers in (0, args.watchers):
                    if database == "postgres":
                        url, drop = crawl.fresh_postgres(args.postgres)
                    else:
                        url, drop = "", (lambda: None)
                    try:
                        found = one_crawl(port, args.pages, watchers, url)
                    finally:
                        drop()
                    print(f"{database:8} watchers {watchers:5}: {found['seconds']:.2f} s, manager CPU "
                          f"{found['manager_cpu']:.2f} s, peak {found['manager_mib']:.0f} MiB, threads "
                          f"{found['threads']:.0f}, watchers' own CPU {found['watchers_cpu']:.2f} s, final seen by "
                          f"{100 * found['seen_final']:.0f}%", flush=True)
                    results.setdefault((database, watchers), []).append(found)
    finally:
        site.terminate()
        site.wait()
    print(f"\nmedians of {args.runs} runs")
    print("| database | watchers | crawl seconds | × without | manager CPU s | watchers' process CPU s | manager peak RSS "
          "| saw the end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for database in databases:
        base = statistics.median(r["seconds"] for r in results[(database, 0)])
        for watchers in (0, args.watchers):
            runs = results[(database, watchers)]
            seconds = statistics.median(r["seconds"] for r in runs)
            print(f"| {database} | {watchers} | {seconds:.2f} | {seconds / base:.2f} | "
                  f"{statistics.median(r['manager_cpu'] for r in runs):.1f} | "
                  f"{statistics.median(r['watchers_cpu'] for r in runs):.1f} | "
                  f"{statistics.median(r['manager_mib'] for r in runs):.0f} MiB | "
                  f"{100 * min(r['seen_final'] for r in runs):.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
