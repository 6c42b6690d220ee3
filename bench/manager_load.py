"""Load harness for the manager: a no-op baseline (health Check), GetJob and UpdateJobMetadata (merge)
at 1, 8 and 32 calls in flight, against one running manager per database. Prints calls/s, p50, p99,
each RPC's throughput as a ratio of the baseline measured in the same run, and the server's CPU per call
(the manager's, plus the PostgreSQL server's processes on PostgreSQL) against the baseline's."""
from __future__ import annotations

import argparse
import itertools
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.testing.processes import start_manager

sys.path.insert(0, os.path.dirname(__file__))
from crawl_bench import postgres_cpu  # noqa: E402

from quaero.testing.procfs import process_cpu  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)


@dataclass
class Result:
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def drive(start_call: Callable[[int], Any], in_flight: int, duration: float) -> Result:
    """Keeps `in_flight` calls outstanding (futures, no thread per call) for `duration` seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    counter = itertools.count()
    outstanding = [in_flight]
    errors: list[BaseException] = []
    began = time.perf_counter()

    def launch() -> None:
        started = time.perf_counter()
        future = start_call(next(counter))
        future.add_done_callback(lambda f: finished(f, started))

    def finished(future: Any, started: float) -> None:
        now = time.perf_counter()
        exception = future.exception()
        with lock:
            if exception is not None:
                errors.append(exception)
            latencies.append(now - started)
            keep_going = now - began < duration and not errors
            if not keep_going:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    done.set()
        if keep_going:
            launch()

    for _ in range(in_flight):
        launch()
    done.wait()
    if errors:
        raise RuntimeError(f"calls failed: {errors[0]}")
    return Result(len(latencies), time.perf_counter() - began, latencies)


def server_cpu(pid: int, postgres: bool) -> tuple[float, float]:
    """CPU seconds so far of the manager, and of the PostgreSQL server when it is the database."""
    return process_cpu(pid), postgres_cpu() if postgres else 0.0


def bench_backend(label: str, env: dict[str, str], levels: list[int], duration: float) -> list[tuple[Any, ...]]:
    manager = start_manager(env)
    rows = []
    try:
        client = ManagerClient.connect(manager.address, TOKEN, default_timeout=30)
        health = health_pb2_grpc.HealthStub(client.channel)
        job = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="bench", name="bench"))
        patches = []
        for n in range(256):
            patch = struct_pb2.Struct()
            # The shape the executor writes: a few keys, one nested object.
            patch.update({"auth_id": f"site-{n % 4}", "phase": "execution", "progress": {"pages": n}})
            patches.append(patch)
        calls: dict[str, Callable[[int], Any]] = {
            "health Check (baseline)": lambda n: health.Check.future(health_pb2.HealthCheckRequest(), timeout=30),
            "GetJob": lambda n: client.jobs.GetJob.future(jobs_pb2.GetJobRequest(job_id=job.id), timeout=30),
            "UpdateJobMetadata (merge)": lambda n: client.jobs.UpdateJobMetadata.future(
                jobs_pb2.UpdateJobMetadataRequest(job_id=job.id, metadata=patches[n % 256]), timeout=30),
        }
        postgres = label == "PostgreSQL"
        for level in levels:
            baseline = baseline_cpu = None
            for name, call in calls.items():
                drive(call, level, min(0.3, duration))  # warm up
                before = server_cpu(manager.process.pid, postgres)
                result = drive(call, level, duration)
                after = server_cpu(manager.process.pid, postgres)
                manager_cpu, database_cpu = ((a - b) / result.calls * 1000 for a, b in zip(after, before, strict=True))
                cpu_per_call = manager_cpu + database_cpu
                baseline = baseline or result.rate
                baseline_cpu = baseline_cpu or cpu_per_call
                rows.append((label, name, level, result.rate, result.percentile(0.5), result.percentile(0.99),
                             result.rate / baseline, cpu_per_call, cpu_per_call / baseline_cpu))
                print(f"  {label:10} {name:27} in flight {level:3}: {result.rate:8.0f}/s p50 "
                      f"{result.percentile(0.5):6.2f} ms p99 {result.percentile(0.99):6.2f} ms "
                      f"ratio {result.rate / baseline:.2f} server CPU {cpu_per_call:.3f} ms/call (manager {manager_cpu:.3f}"
                      + (f", database {database_cpu:.3f})" if postgres else ")"), flush=True)
        client.close()
    finally:
        manager.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--levels", default="1,8,32", help="calls in flight")
    parser.add_argument("--postgres", default=os.environ.get("QUAERO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="admin URL of a PostgreSQL server; '' to skip it")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"QUAERO_DATA_DIR": tmp, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": ""}
        rows += bench_backend("SQLite", env, levels, args.duration)
    database = "quaero_bench_" + secrets.token_hex(4)
    admin = None
    try:
        if args.postgres:  # ('' skips it, as in the other benchmarks)
            admin = psycopg.connect(args.postgres, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        print(f"PostgreSQL not reachable ({error}); skipping its rows", file=sys.stderr)
    if admin is not None:
        with admin:
            admin.execute(f'CREATE DATABASE "{database}"')
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    url = args.postgres.rsplit("/", 1)[0] + "/" + database
                    env = {"QUAERO_DATA_DIR": tmp, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": url}
                    rows += bench_backend("PostgreSQL", env, levels, args.duration)
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print("\n| database | RPC | in flight | calls/s | p50 ms | p99 ms | × baseline | server CPU ms/call | × baseline CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, name, level, rate, p50, p99, ratio, cpu, cpu_ratio in rows:
        print(f"| {label} | {name} | {level} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {ratio:.2f} | {cpu:.3f} | "
              f"{cpu_ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
