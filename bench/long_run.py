"""A long run holds steady: one crawl of 100,000 cookie-protected pages (crawl_bench's site, in its own
process) by one manager and two executors, on SQLite and on PostgreSQL. Sampled once a second: the
parent's progress, and the resident memory of the manager and of each executor. Reports pages/s over the
whole run and in its first and last tenth (by pages done), peak RSS, CPU per page, and errors (failed
pages, ERROR lines in the services' logs). The targets (issue 17): no errors, manager RSS <= 200 MB and
executor <= 150 MB throughout, the last tenth >= 0.8x the first. Exit code 1 when one is missed."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from crawl_bench import HOST, SESSION, TOKEN, fresh_postgres, postgres_cpu, start_site  # noqa: E402

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc  # noqa: E402
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2  # noqa: E402
from quaero.client import ManagerClient  # noqa: E402
from quaero.convert import job_status  # noqa: E402
from quaero.rpc.channel import open_channel  # noqa: E402
from quaero.testing.processes import ServiceProcess, start_executor, start_manager  # noqa: E402
from quaero.testing.procfs import process_cpu  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MANAGER_RSS_LIMIT_MB = 200
EXECUTOR_RSS_LIMIT_MB = 150
STEADY_RATIO = 0.8


@dataclass
class Sample:
    seconds: float
    done: int
    rss_mb: dict[str, float]


@dataclass
class Result:
    database: str
    pages: int = 0
    seconds: float = 0.0
    status: str = ""
    failed: int = 0
    samples: list[Sample] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)

    def peak(self, prefix: str) -> float:
        return max((v for s in self.samples for k, v in s.rss_mb.items() if k.startswith(prefix)), default=0.0)

    def tenth_rates(self) -> list[float]:
        """Pages/s over each tenth of the pages done, in order."""
        tenth = self.pages / 10
        return [tenth / max(_time_at(self.samples, (k + 1) * tenth) - _time_at(self.samples, k * tenth), 1e-9)
                for k in range(10)]


def _time_at(samples: list[Sample], done: float) -> float:
    """When `done` pages were done, interpolated between samples."""
    previous = Sample(0.0, 0, {})
    for sample in samples:
        if sample.done >= done:
            span = sample.done - previous.done
            fraction = (done - previous.done) / span if span else 1.0
            return previous.seconds + fraction * (sample.seconds - previous.seconds)
        previous = sample
    return samples[-1].seconds if samples else 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def long_run(port: int, pages: int, concurrency: int, workers: int, database_url: str, label: str) -> Result:
    result = Result(label)
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_API_TOKEN": TOKEN, "QUAERO_EXECUTOR_TOKEN": TOKEN + "-executor", "QUAERO_DATABASE_URL": database_url,
               "QUAERO_RESOLVE": f"{HOST}=127.0.0.1"}
        manager = start_manager({**env, "QUAERO_DATA_DIR": f"{work}/m"})
        processes: dict[str, ServiceProcess] = {"manager": manager}
        try:
            for n in (1, 2):
                processes[f"executor-{n}"] = start_executor({**env, "QUAERO_DATA_DIR": f"{work}/e{n}"}, manager.address,
                                                            extra=["--workers", str(workers), "--log-level", "WARNING"])
            executors = [processes["executor-1"], processes["executor-2"]]
            client = ManagerClient.connect(manager.address, TOKEN)
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="long", site_domain=HOST, cookies=[
                auth_pb2.Cookie(name="session", value=SESSION, domain=HOST, path="/")]))
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="long", auth_id="long", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://{HOST}:{port}/"], max_depth=40, max_pages=pages, concurrency=concurrency,
                    allowed_networks=["127.0.0.1/32"]))))
            before = {name: process_cpu(p.process.pid) for name, p in processes.items()}
            database_before = postgres_cpu() if database_url else 0.0
            with open_channel(executors[0].address, TOKEN) as channel:
                parent_id = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
                    executor_pb2.ExecuteJobDefinitionRequest(definition_id="long")).parent_job_id
            began = time.monotonic()
            while True:
                time.sleep(1.0)
                job = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
                sample = Sample(time.monotonic() - began, int(job.progress_current),
                                {name: rss_mb(p.process.pid) for name, p in processes.items()})
                result.samples.append(sample)
                if len(result.samples) % 30 == 0:
                    rss = ", ".join(f"{k} {v:.0f}" for k, v in sample.rss_mb.items())
                    print(f"  {label}: {sample.seconds:.0f} s, {sample.done} pages, RSS MB {rss}", flush=True)
                if job_status(job.status).terminal:
                    break
            result.seconds = time.monotonic() - began
            result.status = jobs_pb2.JobStatus.Name(job.status)
            stats = client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_id))
            result.pages, result.failed = int(stats.completed), int(stats.failed)
            result.samples.append(Sample(result.seconds, result.pages, result.samples[-1].rss_mb))
            result.cpu = {name: process_cpu(p.process.pid) - before[name] for name, p in processes.items()}
            if database_url:
                result.cpu["database"] = postgres_cpu() - database_before
            client.close()
        finally:
            for process in reversed(processes.values()):
                process.stop()
        for name, process in processes.items():
            result.error_lines += [f"{name}: {line}" for line in process.logs().splitlines() if "level=ERROR" in line]
    return result


def report(results: list[Result]) -> bool:
    print("\n| database | pages | seconds | pages/s | first tenth | last tenth | last ÷ first | slowest tenth ÷ first "
          "| manager peak RSS | executor peak RSS | CPU per page (ms) | failed pages, ERROR lines |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    ok = True
    for r in results:
        rates = r.tenth_rates()
        first, last = rates[0], rates[-1]
        per_page = ", ".join(f"{k} {1000 * v / max(r.pages, 1):.2f}" for k, v in r.cpu.items())
        print(f"| {r.database} | {r.pages:,} | {r.seconds:.0f} | {r.pages / r.seconds:.0f} | {first:.0f} | {last:.0f} | "
              f"{last / first:.2f} | {min(rates) / first:.2f} | {r.peak('manager'):.0f} MB | {r.peak('executor'):.0f} MB "
              f"| {per_page} | {r.failed}, {len(r.error_lines)} |")
        print(f"  {r.database}: pages/s by tenth: {', '.join(f'{rate:.0f}' for rate in rates)}")
        misses = []
        if r.status != "JOB_STATUS_COMPLETED" or r.failed or r.error_lines:
            misses.append(f"errors (status {r.status}, {r.failed} failed pages, {len(r.error_lines)} ERROR lines)")
        if r.peak("manager") > MANAGER_RSS_LIMIT_MB:
            misses.append(f"manager RSS {r.peak('manager'):.0f} MB > {MANAGER_RSS_LIMIT_MB}")
        if r.peak("executor") > EXECUTOR_RSS_LIMIT_MB:
            misses.append(f"executor RSS {r.peak('executor'):.0f} MB > {EXECUTOR_RSS_LIMIT_MB}")
        if last < STEADY_RATIO * first:
            misses.append(f"last tenth {last:.0f}/s < {STEADY_RATIO} x first {first:.0f}/s")
        for miss in misses:
            print(f"  {r.database}: MISSED {miss}")
        for line in r.error_lines[:5]:
            print(f"  {r.database}: {line[:300]}")
        ok = ok and not misses
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16, help="pages at once in the run")
    parser.add_argument("--workers", type=int, default=8, help="crawl workers per executor")
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server; '' to skip it")
    parser.add_argument("--only", default="", help="sqlite or postgres")
    args = parser.parse_args()
    chosen = [name for name in ("sqlite", "postgres") if not args.only or name == args.only]
    if not args.postgres and "postgres" in chosen:
        chosen.remove("postgres")
    site, port = start_site(args.pages)
    results = []
    try:
        for name in chosen:
            if name == "sqlite":
                results.append(long_run(port, args.pages, args.concurrency, args.workers, "", "SQLite"))
            else:
                url, drop = fresh_postgres(args.postgres)
                try:
                    results.append(long_run(port, args.pages, args.concurrency, args.workers, url, "PostgreSQL"))
                finally:
                    drop()
    finally:
        site.terminate()
        site.wait()
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
