"""Job-queue benchmark: the manager as a job queue beside the queues users know, in one run.

N no-op jobs are enqueued with each system's fast path (bulk add), then drained by W worker processes with
F jobs in flight each (batched lease/complete), started together after the enqueue:

- Quaero on SQLite and on PostgreSQL: BatchCreateChildJobs (1,000 a call) under one run; workers hold up
  to 4 × F leased jobs (as many as Celery's worker reserves) and complete a batch in the call that leases
  the next (CompleteLeasedJobs with lease_next). Every job is a row, durable, fenced by its lease token.
- Celery 5 on RabbitMQ and on Redis: apply_async on one producer; `celery worker -P threads -c F` with its
  defaults (prefetch 4 × F; acks on receipt: a job whose worker dies is lost).
- BullMQ 6 on Redis (bench/bullmq/queue.mjs): addBulk (1,000 a call); a Worker with concurrency F.

Reported, medians of --runs rounds (spread: min-max): jobs/s to enqueue, to drain (first completion to
last) and end to end (enqueue then drain), CPU seconds per 1,000 jobs of every process (enqueuing client,
workers, and the server: manager, PostgreSQL, RabbitMQ's beam.smp or redis-server; the benchmark has the
servers to itself), and RSS (the queue server's, the largest worker's).

Then the cost of one lease (LeaseJobs, 8 jobs) with 10,000 and 1,000,000 pending jobs on both databases,
on a table just filled (no statistics yet) and after ANALYZE.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from google.protobuf import duration_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.testing.processes import start_manager
from quaero.testing.procfs import named_cpu, pids_named, process_cpu, rss_mib

sys.path.insert(0, os.path.dirname(__file__))
from crawl_bench import PG_ADMIN, fresh_postgres  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)
EXECUTOR_TOKEN = "bench-executor-" + secrets.token_hex(8)  # (LeaseJobs and CompleteLeasedJobs need the executor's)
BULLMQ = Path(__file__).with_name("bullmq")
RABBITMQ, REDIS = "amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/0"
JOB_TYPE = "noop"
PREFETCH = 4  # jobs a worker holds per job in flight: Celery's default worker_prefetch_multiplier, for both
ENQUEUE_BATCH = 1000
SYSTEMS = ("quaero-sqlite", "quaero-postgres", "celery-rabbitmq", "celery-redis", "bullmq")
LABELS = {"quaero-sqlite": "Quaero, SQLite", "quaero-postgres": "Quaero, PostgreSQL",
          "celery-rabbitmq": "Celery 5 + RabbitMQ", "celery-redis": "Celery 5 + Redis", "bullmq": "BullMQ 6 + Redis"}
SERVERS = {"quaero-postgres": ["postgres"], "celery-rabbitmq": ["beam.smp"], "celery-redis": ["redis-server"],
           "bullmq": ["redis-server"]}


# ---- the workers (run as `queue_bench.py --worker KIND TARGET IN_FLIGHT`) --------------------------------------
class Progress:
    """What a worker reports on stdout every 50 ms: jobs done, wall time and process CPU at its first and
    last completion (so its start-up is not counted), its peak RSS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.first = self.last = self.cpu_first = self.cpu_last = 0.0

    def add(self, count: int) -> None:
        if count <= 0:
            return
        stamp, cpu = time.time(), time.process_time()
        with self.lock:
            if not self.done:
                self.first, self.cpu_first = stamp, cpu
            self.done += count
            self.last, self.cpu_last = stamp, cpu

    def report_forever(self) -> None:
        reported = -1
        while True:
            time.sleep(0.05)
            with self.lock:
                if self.done == reported:
                    continue
                reported = self.done
                line = {"done": self.done, "first": self.first, "last": self.last, "cpu_first": self.cpu_first,
                        "cpu_last": self.cpu_last, "rss_mib": rss_mib(os.getpid(), peak=True)}
            print(json.dumps(line), file=sys.__stdout__, flush=True)  # (Celery's worker takes sys.stdout)


PROGRESS = Progress()


def ready_then_wait() -> None:
    """Tells the benchmark this worker is connected, and waits for its word to start."""
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    threading.Thread(target=PROGRESS.report_forever, daemon=True).start()


def quaero_worker(address: str, in_flight: int) -> None:
    """Holds up to PREFETCH × `in_flight` leased jobs, runs them `in_flight` at a time (no-op), and completes
    them in the call that leases the next ones (CompleteLeasedJobs with lease_next: one call per batch).
    Celery's worker reserves as many (worker_prefetch_multiplier, 4 by default)."""
    client = ManagerClient.connect(address, os.environ["QUAERO_EXECUTOR_TOKEN"], default_timeout=30)
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=60))
    following = jobs_pb2.LeaseJobsRequest(worker_id="bench-" + secrets.token_hex(4), max_jobs=PREFETCH * in_flight,
                                          lease_duration=duration, type=JOB_TYPE)
    completed = jobs_pb2.JOB_STATUS_COMPLETED
    client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=os.environ["QUEUE_BENCH_RUN"]))  # connected
    ready_then_wait()
    leased: Any = []
    idle = 0.001
    while True:
        answer = client.jobs.CompleteLeasedJobs(jobs_pb2.CompleteLeasedJobsRequest(completions=[
            jobs_pb2.CompleteLeasedJobRequest(job_id=item.job.id, lease_token=item.lease.lease_token, status=completed)
            for item in leased], lease_next=following))
        PROGRESS.add(sum(1 for outcome in answer.outcomes if outcome.HasField("job")))
        leased = answer.leased.leased_jobs
        if leased:
            idle = 0.001
        else:
            time.sleep(idle)
            idle = min(idle * 2, 0.05)


def celery_app(broker: str, queue: str) -> tuple[Any, Any]:
    from celery import Celery

    app = Celery("queue_bench", broker=broker, set_as_current=True)
    app.conf.update(task_default_queue=queue, task_ignore_result=True, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True, worker_send_task_events=False, worker_prefetch_multiplier=PREFETCH,
                    worker_redirect_stdouts=False)

    @app.task(name="noop")
    def noop(n: int) -> None:
        PROGRESS.add(1)

    return app, noop


def celery_worker(broker: str, queue: str, in_flight: int) -> None:
    app, _ = celery_app(broker, queue)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
    ready_then_wait()
    app.worker_main(argv=["worker", "-P", "threads", "-c", str(in_flight), "-Q", queue, "-l", "WARNING",
                          "--without-gossip", "--without-mingle", "--without-heartbeat", "-n",
                          f"bench-{secrets.token_hex(4)}@%h"])


def worker_main(kind: str, target: str, in_flight: int) -> int:
    if kind == "quaero":
        quaero_worker(target, in_flight)
    else:
        broker, _, queue = target.partition("#")
        celery_worker(broker, queue, in_flight)
    return 0


# ---- the benchmark's side -------------------------------------------------------------------------------------
@dataclass
class Round:
    jobs: int
    enqueue_seconds: float
    drain_seconds: float
    enqueue_cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    drain_cpu: dict[str, float] = field(default_factory=dict)
    server_rss: float = 0.0
    worker_rss: float = 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * (sum(self.enqueue_cpu.values()) + sum(self.drain_cpu.values())) / self.jobs


class Servers:
    """CPU and RSS of the processes that hold a system's queue."""

    def __init__(self, system: str, manager_pid: int = 0) -> None:
        self.names = SERVERS.get(system, [])
        self.manager_pid = manager_pid

    def cpu(self) -> dict[str, float]:
        cpu = {name: named_cpu(name) for name in self.names}
        if self.manager_pid:
            cpu["manager"] = process_cpu(self.manager_pid)
        return cpu

    def rss(self) -> float:
        if self.manager_pid:
            return rss_mib(self.manager_pid)
        if self.names and self.names[0] != "postgres":
            return sum(rss_mib(pid) for pid in pids_named(self.names[0]))
        return 0.0


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


@contextmanager
def client_cpu(into: dict[str, float], name: str = "client") -> Iterator[None]:
    before = time.process_time()
    yield
    into[name] = time.process_time() - before


def drain(commands: list[list[str]], jobs: int, servers: Servers, env: dict[str, str] | None = None,
          timeout: float = 900) -> tuple[float, dict[str, float], float]:
    """Starts the workers, lets them go together once all are connected, and waits until they have done
    `jobs`: (seconds from the first completion to the last, CPU by process, the largest worker's RSS)."""
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, **(env or {})}, cwd=BULLMQ if command[0] == "node" else None)
                 for command in commands]
    latest: list[dict[str, Any]] = [{} for _ in processes]
    ready = [threading.Event() for _ in processes]

    def follow(index: int) -> None:
        stdout = processes[index].stdout
        assert stdout is not None
        for line in stdout:
            if line.startswith("{"):
                found = json.loads(line)
                if found.get("ready"):
                    ready[index].set()
                else:
                    latest[index] = found

    readers = [threading.Thread(target=follow, args=(index,), daemon=True) for index in range(len(processes))]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 60
        while not all(event.is_set() for event in ready):
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise RuntimeError(f"the workers did not all get ready ({commands[0]})")
            time.sleep(0.01)
        before = servers.cpu()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        deadline = time.monotonic() + timeout
        while sum(item.get("done", 0) for item in latest) < jobs:
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise RuntimeError(f"the workers did {sum(item.get('done', 0) for item in latest)} of {jobs} jobs")
            time.sleep(0.02)
        time.sleep(0.1)  # (every worker's last line)
        cpu = delta(servers.cpu(), before)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    seconds = max(item["last"] for item in latest if item.get("done")) - min(
        item["first"] for item in latest if item.get("done"))
    cpu["workers"] = sum(item["cpu_last"] - item["cpu_first"] for item in latest if item.get("done"))
    return seconds, cpu, max(item.get("rss_mib", 0.0) for item in latest)


def worker_command(kind: str, target: str, in_flight: int) -> list[str]:
    return [sys.executable, __file__, "--worker", kind, target, str(in_flight)]


def quaero_round(database_url: str, jobs: int, workers: int, in_flight: int) -> Round:
    with tempfile.TemporaryDirectory() as work:
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_EXECUTOR_TOKEN": EXECUTOR_TOKEN,
               "QUAERO_DATABASE_URL": database_url}
        manager = start_manager(env)
        try:
            client = ManagerClient.connect(manager.address, TOKEN, default_timeout=60)
            run = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="queue_bench", name="queue bench"))
            client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=run.id, status=jobs_pb2.JOB_STATUS_RUNNING))
            servers = Servers("quaero-postgres" if database_url else "quaero-sqlite", manager.process.pid)
            enqueue_cpu: dict[str, float] = {}
            before = servers.cpu()
            began = time.perf_counter()
            with client_cpu(enqueue_cpu):
                for start in range(0, jobs, ENQUEUE_BATCH):
                    client.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(parent_id=run.id, children=[
                        jobs_pb2.ChildJobSpec(type=JOB_TYPE, dedup_key=str(n))
                        for n in range(start, min(jobs, start + ENQUEUE_BATCH))]))
            enqueue_seconds = time.perf_counter() - began
            enqueue_cpu.update(delta(servers.cpu(), before))
            seconds, drain_cpu, worker_rss = drain(
                [worker_command("quaero", manager.address, in_flight) for _ in range(workers)], jobs, servers,
                {"QUEUE_BENCH_RUN": run.id, "QUAERO_EXECUTOR_TOKEN": EXECUTOR_TOKEN})
            left = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.id))
            if left.progress_current != jobs:
                raise RuntimeError(f"the run counts {left.progress_current} of {jobs} jobs done")
            client.close()
            return Round(jobs, enqueue_seconds, seconds, enqueue_cpu, drain_cpu, servers.rss(), worker_rss)
        finally:
            manager.stop()


def celery_round(broker: str, system: str, jobs: int, workers: int, in_flight: int) -> Round:
    queue = "queue-bench-" + secrets.token_hex(4)
    app, noop = celery_app(broker, queue)
    servers = Servers(system)
    enqueue_cpu: dict[str, float] = {}
    try:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        before = servers.cpu()
        began = time.perf_counter()
        with client_cpu(enqueue_cpu), app.producer_or_acquire() as producer:
            for n in range(jobs):
                noop.apply_async((n,), producer=producer)
        enqueue_seconds = time.perf_counter() - began
        enqueue_cpu.update(delta(servers.cpu(), before))
        seconds, drain_cpu, worker_rss = drain(
            [worker_command("celery", f"{broker}#{queue}", in_flight) for _ in range(workers)], jobs, servers)
        return Round(jobs, enqueue_seconds, seconds, enqueue_cpu, drain_cpu, servers.rss(), worker_rss)
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def node(*arguments: str) -> dict[str, Any]:
    result = subprocess.run(["node", str(BULLMQ / "queue.mjs"), *arguments], capture_output=True, text=True,
                            timeout=600, cwd=BULLMQ)
    if result.returncode != 0:
        raise RuntimeError(f"node queue.mjs {arguments[0]} failed: {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def bullmq_round(jobs: int, workers: int, in_flight: int) -> Round:
    queue = "queue-bench-" + secrets.token_hex(4)
    servers = Servers("bullmq")
    try:
        before = servers.cpu()
        began = time.perf_counter()
        added = node("enqueue", queue, str(jobs))
        enqueue_seconds = time.perf_counter() - began
        enqueue_cpu = {"client": added["cpu"], **delta(servers.cpu(), before)}
        seconds, drain_cpu, worker_rss = drain(
            [["node", str(BULLMQ / "queue.mjs"), "work", queue, str(in_flight)] for _ in range(workers)], jobs, servers)
        return Round(jobs, enqueue_seconds, seconds, enqueue_cpu, drain_cpu, servers.rss(), worker_rss)
    finally:
        node("remove", queue)


# ---- one lease at 10k and 1M pending ---------------------------------------------------------------------------
def fill_pending(database_url: str, parent_id: str, count: int) -> None:
    """`count` pending children of the run, written straight into the manager's database in one statement."""
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO jobs (id, parent_id, type, name, status, config, metadata, result, created_at, updated_at) "
                "SELECT gen_random_uuid()::text, %s, %s, '', 'pending', '{}', '{}', '{}', "
                "now() + g * interval '1 microsecond', now() FROM generate_series(1, %s) AS g",
                (parent_id, JOB_TYPE, count))
        return
    lite = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=60)
    try:
        with lite:
            lite.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                "INSERT INTO jobs (id, parent_id, type, name, status, config, metadata, result, created_at, updated_at) "
                "SELECT printf('00000000-0000-4000-8000-%012d', n), ?, ?, '', 'pending', '{}', '{}', '{}', "
                "printf('2026-01-01 %02d:%02d:%02d.%06d', n / 3600000000 % 24, n / 60000000 % 60, n / 1000000 % 60, "
                "n % 1000000), '2026-01-01 00:00:00.000000' FROM g", (count, parent_id, JOB_TYPE))
    finally:
        lite.close()


def analyze(database_url: str) -> None:
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute("ANALYZE jobs")
    else:
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute("ANALYZE")


def lease_latency(database_url: str, pending: int, samples: int) -> tuple[float, float, float, float]:
    """Median and p95 ms of LeaseJobs (8 jobs) on a table just filled, then after ANALYZE."""
    with tempfile.TemporaryDirectory() as work:
        url = database_url or f"sqlite:///{work}/quaero.db"
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_EXECUTOR_TOKEN": EXECUTOR_TOKEN,
               "QUAERO_DATABASE_URL": url}
        manager = start_manager(env)
        try:
            client = ManagerClient.connect(manager.address, TOKEN, default_timeout=60)
            executor = ManagerClient.connect(manager.address, EXECUTOR_TOKEN, default_timeout=60)
            run = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="queue_bench", name="lease latency"))
            fill_pending(url, run.id, pending)
            duration = duration_pb2.Duration(seconds=600)
            timings = []
            for phase in ("fresh", "analysed"):
                if phase == "analysed":
                    analyze(url)
                measured = []
                for _ in range(samples):
                    began = time.perf_counter()
                    leased = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(
                        worker_id="latency", max_jobs=8, lease_duration=duration, type=JOB_TYPE)).leased_jobs
                    measured.append(1000 * (time.perf_counter() - began))
                    assert len(leased) == 8
                timings += [statistics.median(measured), statistics.quantiles(measured, n=20)[-1]]
            client.close()
            executor.close()
            return timings[0], timings[1], timings[2], timings[3]
        finally:
            manager.stop()


# ---- the tables ----------------------------------------------------------------------------------------------
def spread(values: list[float], digits: int = 0) -> str:
    middle = statistics.median(values)
    if len(values) < 2:
        return f"{middle:,.{digits}f}"
    return f"{middle:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def print_table(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(f"\n{args.jobs:,} no-op jobs, {args.workers} workers × {args.in_flight} in flight; medians of "
          f"{args.runs} (min–max)")
    print("| system | enqueue jobs/s | drain jobs/s | end to end jobs/s | CPU s per 1,000 jobs, all processes | "
          "RSS MiB: server, largest worker |")
    print("|---|---:|---:|---:|---|---:|")
    for system, rounds in results.items():
        if not rounds:
            continue
        processes = sorted({name for r in rounds for name in (*r.enqueue_cpu, *r.drain_cpu)})
        per_job = {name: [1000 * (r.enqueue_cpu.get(name, 0) + r.drain_cpu.get(name, 0)) / r.jobs for r in rounds]
                   for name in processes}
        by_process = ", ".join(f"{name} {statistics.median(values):.2f}" for name, values in per_job.items())
        print(f"| {LABELS[system]} | {spread([r.jobs / r.enqueue_seconds for r in rounds])} | "
              f"{spread([r.jobs / r.drain_seconds for r in rounds])} | "
              f"{spread([r.jobs / (r.enqueue_seconds + r.drain_seconds) for r in rounds])} | "
              f"{spread([r.cpu_per_1000 for r in rounds], 2)} ({by_process}) | "
              f"{statistics.median(r.server_rss for r in rounds):.0f}, {statistics.median(r.worker_rss for r in rounds):.0f} |",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="rounds of every system, interleaved (medians)")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(SYSTEMS) + ",lease")
    parser.add_argument("--pending", default="10000,1000000", help="queue sizes for the lease latency")
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TARGET", "IN_FLIGHT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker[0], args.worker[1], int(args.worker[2]))
    chosen = args.only.split(",") if args.only else [*SYSTEMS, "lease"]
    unknown = set(chosen) - {*SYSTEMS, "lease"}
    if unknown:
        parser.error(f"unknown --only {', '.join(sorted(unknown))}")
    if "bullmq" in chosen and not (BULLMQ / "node_modules" / "bullmq").is_dir():
        # (Found before any round runs, not as a traceback after ten minutes of the others.)
        parser.error(f"BullMQ is not installed in {BULLMQ}: run `npm ci` there (`python3 build.py bench` does), "
                     "or leave it out with --only")
    rounds: dict[str, Callable[[], Round]] = {
        "quaero-sqlite": lambda: quaero_round("", args.jobs, args.workers, args.in_flight),
        "quaero-postgres": lambda: with_postgres(args.postgres, lambda url: quaero_round(
            url, args.jobs, args.workers, args.in_flight)),
        "celery-rabbitmq": lambda: celery_round(RABBITMQ, "celery-rabbitmq", args.jobs, args.workers, args.in_flight),
        "celery-redis": lambda: celery_round(REDIS, "celery-redis", args.jobs, args.workers, args.in_flight),
        "bullmq": lambda: bullmq_round(args.jobs, args.workers, args.in_flight),
    }
    results: dict[str, list[Round]] = {system: [] for system in SYSTEMS if system in chosen}
    for number in range(args.runs):
        for system in results:
            found = rounds[system]()
            cpu = {name: found.enqueue_cpu.get(name, 0) + found.drain_cpu.get(name, 0)
                   for name in {**found.enqueue_cpu, **found.drain_cpu}}
            print(f"round {number + 1} {system:16} enqueue {found.jobs / found.enqueue_seconds:8,.0f}/s drain "
                  f"{found.jobs / found.drain_seconds:8,.0f}/s CPU {found.cpu_per_1000:.2f} s per 1,000 jobs "
                  f"(in all, s: {', '.join(f'{k} {v:.2f}' for k, v in sorted(cpu.items()))})", flush=True)
            results[system].append(found)
    if results:
        print_table(results, args)
    if "lease" in chosen:
        print("\nLeaseJobs (8 jobs), ms: median / p95, on a table just filled and after ANALYZE")
        print("| database | pending | fresh | analysed |")
        print("|---|---:|---:|---:|")
        for label in ("SQLite", "PostgreSQL"):
            for pending in (int(value) for value in args.pending.split(",")):
                if label == "SQLite":
                    ms = lease_latency("", pending, 200)
                else:
                    ms = with_postgres(args.postgres, lambda url: lease_latency(url, pending, 200))  # noqa: B023
                print(f"| {label} | {pending:,} | {ms[0]:.2f} / {ms[1]:.2f} | {ms[2]:.2f} / {ms[3]:.2f} |",
                      flush=True)
    return 0


def with_postgres(admin_url: str, use: Callable[[str], Any]) -> Any:
    url, drop = fresh_postgres(admin_url)
    try:
        return use(url)
    finally:
        drop()


if __name__ == "__main__":
    sys.exit(main())
