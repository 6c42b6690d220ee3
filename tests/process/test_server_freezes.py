"""A server never freezes, and a stop always stops, as real processes on both databases.

What real infrastructure does to a server (load balancers and meshes opening and cancelling health
Watch streams, clients connecting, calling and leaving) happens here all through an authenticated crawl;
every health Check must answer within a second, and SIGTERM then stops both processes within the stop
limit. With grpcio-health-checking's servicer (before quaero.rpc.health) the churn froze both services
within seconds. Stuck handlers and a stuck completion-queue thread are injected (QUAERO_FAULT_INJECT
HANG / FREEZE): the watchdog reports them, and SIGTERM or SIGINT still ends the process in time."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.rpc.server import STOP_SECONDS
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.metrics import scrape
from quaero.testing.processes import ServiceProcess, start_executor, start_manager
from quaero.testing.site import SiteServer
from tests.process.test_executor_process import wait_for
from tests.support.sites import members_site

OPERATOR, EXECUTOR = "freeze-operator", "freeze-executor"
SESSION = "freeze-session-value"
PAGES = 120
WATCH_CYCLES = 1000  # per server
CHURN_CLIENTS = 200  # per server
CLIENT_THREADS = 4


def start_crawl(manager: ServiceProcess, executor: ServiceProcess, site: SiteServer) -> str:
    with ManagerClient.connect(manager.address, OPERATOR) as client:
        client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="freeze", site_domain="127.0.0.1", cookies=[
            auth_pb2.Cookie(name="session", value=SESSION, domain="127.0.0.1")]))
        definition = client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
            job_definition=definitions_pb2.JobDefinition(
                id=f"freeze-{time.monotonic_ns()}", auth_id="freeze", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{site.port}/p/0"], max_depth=10, concurrency=4,
                    allowed_networks=[LOCAL_SITES]))))
    with open_channel(executor.address, OPERATOR) as channel:
        return str(executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
            executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition.id)).parent_job_id)


class Traffic:
    """Health Watch open/cancel cycles, connection churn and a Check every 50 ms on one server, from
    several threads at once, until `enough()` and the counts are reached (or the deadline passes)."""

    def __init__(self, server: ServiceProcess, services: list[str], call: Any) -> None:
        self.server = server
        self.services = [*services, "", "no.such.Service"]
        self.call = call  # call(channel): one authenticated call of this server's API
        self.watch_cycles = 0
        self.churned = 0
        self.check_seconds: list[float] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def watch(self, enough: Any, deadline: float) -> None:
        with grpc.insecure_channel(self.server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            n = 0
            while time.monotonic() < deadline and not (enough() and self.watch_cycles >= WATCH_CYCLES):
                service = self.services[n % len(self.services)]
                n += 1
                call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=5)
                try:
                    first = next(call)
                    assert first.status in (health_pb2.HealthCheckResponse.SERVING,
                                            health_pb2.HealthCheckResponse.SERVICE_UNKNOWN), first
                except grpc.RpcError as error:
                    self.fail(f"Watch({service!r}): {error.code().name}")
                    return
                finally:
                    call.cancel()
                with self.lock:
                    self.watch_cycles += 1

    def churn(self, enough: Any, deadline: float) -> None:
        while time.monotonic() < deadline and not (enough() and self.churned >= CHURN_CLIENTS):
            try:
                with open_channel(self.server.address, OPERATOR) as channel:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    self.call(channel)
            except grpc.RpcError as error:
                self.fail(f"churn: {error.code().name}")
                return
            with self.lock:
                self.churned += 1

    def check(self, done: threading.Event) -> None:
        with grpc.insecure_channel(self.server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not done.wait(0.05):
                started = time.monotonic()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                except grpc.RpcError as error:
                    self.fail(f"Check: {error.code().name} after {time.monotonic() - started:.2f} s")
                    return
                self.check_seconds.append(time.monotonic() - started)

    def fail(self, why: str) -> None:
        with self.lock:
            self.failures.append(why)


def stop_within_limit(process: ServiceProcess, signum: int = signal.SIGTERM) -> tuple[int, float]:
    started = time.monotonic()
    process.process.send_signal(signum)
    try:
        code = process.process.wait(STOP_SECONDS + 5)
    except Exception:
        process.process.kill()
        raise AssertionError(f"{process.name} did not stop within {STOP_SECONDS + 5} s of signal {signum}") from None
    return code, time.monotonic() - started


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_health_watch_and_connection_churn_during_a_crawl_freeze_neither_server(tmp_path: Path, database: str,
                                                                                request: pytest.FixtureRequest) -> None:
    env = {"QUAERO_API_TOKEN": OPERATOR, "QUAERO_EXECUTOR_TOKEN": EXECUTOR}
    if database == "postgres":
        env["QUAERO_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    site = members_site(PAGES, SESSION, delay=0.02)
    manager = start_manager({**env, "QUAERO_DATA_DIR": str(tmp_path / "m")})
    executor = start_executor({**env, "QUAERO_DATA_DIR": str(tmp_path / "e")}, manager.address,
                              extra=["--workers", "4"])
    processes = [executor, manager]
    try:
        parent_id = start_crawl(manager, executor, site)
        client = ManagerClient.connect(manager.address, OPERATOR)
        finished = threading.Event()

        def crawl_over() -> bool:
            if not finished.is_set():
                job = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
                if job.status not in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING):
                    finished.set()
            return finished.is_set()

        def manager_call(channel: grpc.Channel) -> None:
            from quaero.api.manager.v1 import jobs_pb2_grpc
            jobs_pb2_grpc.JobManagerStub(channel).GetJob(jobs_pb2.GetJobRequest(job_id=parent_id), timeout=5)

        def executor_call(channel: grpc.Channel) -> None:  # the executor's own API, answered without a run
            try:
                executor_pb2_grpc.ExecutorStub(channel).CancelExecution(
                    executor_pb2.CancelExecutionRequest(parent_job_id="00000000-0000-4000-8000-000000000000"),
                    timeout=5)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                    raise

        traffic = [Traffic(manager, ["quaero.manager.v1.JobManager"], manager_call),
                   Traffic(executor, ["quaero.executor.v1.Executor"], executor_call)]
        deadline = time.monotonic() + 180
        checks_done = threading.Event()
        threads = [threading.Thread(target=t.check, args=(checks_done,)) for t in traffic]
        for t in traffic:
            threads += [threading.Thread(target=t.watch, args=(crawl_over, deadline)) for _ in range(CLIENT_THREADS)]
            threads += [threading.Thread(target=t.churn, args=(crawl_over, deadline)) for _ in range(CLIENT_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads[len(traffic):]:
            thread.join()
        checks_done.set()
        for thread in threads[:len(traffic)]:
            thread.join()

        for t in traffic:
            assert not t.failures, f"{t.server.name}: {t.failures[:5]}"
            assert t.watch_cycles >= WATCH_CYCLES and t.churned >= CHURN_CLIENTS, (t.watch_cycles, t.churned)
            assert t.check_seconds and max(t.check_seconds) < 1.0
        final = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
        assert final.status == jobs_pb2.JOB_STATUS_COMPLETED, final.error
        stored = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=parent_id, page_size=1000, omit_text=True)).documents
        assert len(stored) == PAGES  # every page signed in (a logged-out one would have been refused)
        client.close()
        for process in processes:
            code, seconds = stop_within_limit(process)
            assert code == 0 and seconds < STOP_SECONDS, (process.name, code, seconds, process.logs()[-3000:])
            assert "event=shutdown_forced" not in process.logs()
            assert SESSION not in process.logs()
    finally:
        for process in processes:
            process.stop()
        site.stop()


def test_a_manager_whose_workers_hang_reports_the_stall_and_sigterm_ends_it_in_time(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": OPERATOR, "QUAERO_EXECUTOR_TOKEN": EXECUTOR,
           "QUAERO_FAULT_INJECT": "GetJob=HANG", "QUAERO_STALL_SECONDS": "2", "QUAERO_STOP_SECONDS": "3"}
    manager = start_manager(env, extra=["--metrics-listen", "127.0.0.1:0"])
    try:
        client = ManagerClient.connect(manager.address, OPERATOR)
        job = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t"))
        hung = [client.jobs.GetJob.future(jobs_pb2.GetJobRequest(job_id=job.id), timeout=60) for _ in range(2)]
        # Both of the SQLite manager's two workers are stuck: nothing else is answered, health included. (A
        # Check sent before both hung calls reached a worker is still answered: CI caught that race once.)
        def health_unanswered() -> bool:
            try:
                with grpc.insecure_channel(manager.address) as channel:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError as unanswered:
                assert unanswered.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                return True
            return False

        wait_for(health_unanswered, 10, "health to go unanswered once both workers hang")
        wait_for(lambda: "event=server_stalled" in manager.logs(), 15, "the watchdog to report the stall")
        stalled = next(line for line in manager.logs().splitlines() if "event=server_stalled" in line)
        assert "running=GetJob:" in stalled and stalled.count("GetJob:") == 2, stalled
        assert "event=thread_stacks" in manager.logs() and "--- thread rpc-1" in manager.logs()
        assert scrape(manager.banner)["quaero_server_stalled"] == 1
        assert scrape(manager.banner)["quaero_server_stalls_total"] == 1

        code, seconds = stop_within_limit(manager)
        assert code == 1 and seconds < 3 + 2, (code, seconds)
        forced = next(line for line in manager.logs().splitlines() if "event=shutdown_forced" in line)
        assert "running=GetJob:" in forced, forced
        for future in hung:
            assert future.exception() is not None
        client.close()
    finally:
        manager.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_executor_whose_completion_queue_is_stuck_is_reported_and_still_stops(tmp_path: Path,
                                                                                 signum: int) -> None:
    env = {"QUAERO_API_TOKEN": OPERATOR, "QUAERO_EXECUTOR_TOKEN": EXECUTOR}
    manager = start_manager({**env, "QUAERO_DATA_DIR": str(tmp_path / "m")})
    executor = start_executor({**env, "QUAERO_DATA_DIR": str(tmp_path / "e"), "QUAERO_STALL_SECONDS": "2",
                               "QUAERO_STOP_SECONDS": "3", "QUAERO_FAULT_INJECT": "CancelExecution=FREEZE"},
                              manager.address)
    try:
        with open_channel(executor.address, OPERATOR) as channel:
            stub = executor_pb2_grpc.ExecutorStub(channel)
            with pytest.raises(grpc.RpcError):  # answered (no such run) ...
                stub.CancelExecution(executor_pb2.CancelExecutionRequest(
                    parent_job_id="00000000-0000-4000-8000-000000000000"), timeout=5)
        # ... and from then on the server's completion-queue thread is stuck in that call's callback.
        wait_for(lambda: "event=server_stalled" in executor.logs(), 15, "the watchdog to report the stall")
        code, seconds = stop_within_limit(executor, signum)
        assert code == 1 and seconds < 3 + 2, (code, seconds)
        logs = executor.logs()
        assert f"event=shutdown signal={signum}" in logs and "event=shutdown_forced" in logs
        assert "stop_seconds=3 passed" in logs
        assert manager.stop() == 0  # the manager was never touched
    finally:
        executor.stop()
        manager.stop()
