"""The executor as a process: a stable worker id that takes its pages back after a crash, pages given
back on a graceful stop, and a health that tells whether the manager answers it."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import start_executor, start_manager
from tests.process.test_executor_process import (
    APP,
    TOKEN,
    free_port,
    slow_site,
    start_run,
    terminal,
    wait_for,
)
from tests.support.grpc_errors import expect_error
from tests.support.hosts import RESOLVE

EXECUTOR_SERVICE = "quaero.executor.v1.Executor"


def environment(tmp_path: Path) -> dict[str, str]:
    return {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN, "QUAERO_EXECUTOR_TOKEN": "executor-secret-1",
            "QUAERO_RESOLVE": ",".join(f"{h}={a}" for h, a in RESOLVE.items())}


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def running_children(client: ManagerClient, parent_id: str) -> int:
    stats = client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_id))
    return int(stats.running)


def test_a_restarted_executor_takes_its_crashed_predecessors_pages_back_at_once(tmp_path: Path) -> None:
    env = environment(tmp_path)
    site = slow_site(pages=8, delay=1.0)
    manager = start_manager(env)
    # Leases of a minute: without the stable id, the pages would wait that long after the crash.
    first = start_executor(env, manager.address, extra=["--workers", "4", "--lease-seconds", "60"])
    second = None
    try:
        with ManagerClient.connect(manager.address, TOKEN) as client:
            parent_id = start_run(first.address, client, f"http://{APP}:{site.port}/", concurrency=4)
            wait_for(lambda: running_children(client, parent_id) >= 2, 30, "pages to be leased")
            worker_id = (tmp_path / "executor-id").read_text().strip()
            first.kill9()
            restarted = time.monotonic()
            second = start_executor(env, manager.address, extra=["--workers", "4", "--lease-seconds", "60"])
            assert (tmp_path / "executor-id").read_text().strip() == worker_id
            final = wait_for(lambda: terminal(client, parent_id), 40, "the restarted executor to finish the run")
            assert final.status == jobs_pb2.JOB_STATUS_COMPLETED, final.error
            assert time.monotonic() - restarted < 30, "the pages waited for their leases to expire"
            assert "event=leases_released when=start" in second.logs()
    finally:
        if second:
            second.stop()
        manager.stop()
        site.stop()


def test_two_executors_on_one_data_directory_get_different_ids(tmp_path: Path) -> None:
    env = environment(tmp_path)
    manager = start_manager(env)
    one = start_executor(env, manager.address, extra=["--workers", "1"])
    two = start_executor(env, manager.address, extra=["--workers", "1"])
    try:
        ids = {(tmp_path / name).read_text().strip() for name in ("executor-id", "executor-id.1")}
        assert len(ids) == 2
    finally:
        one.stop()
        two.stop()
        manager.stop()


def test_a_stopping_executor_gives_its_pages_back(tmp_path: Path) -> None:
    env = environment(tmp_path)
    site = slow_site(pages=6, delay=20.0)
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", "4", "--lease-seconds", "60"])
    try:
        with ManagerClient.connect(manager.address, TOKEN) as client:
            parent_id = start_run(executor.address, client, f"http://{APP}:{site.port}/", concurrency=4)
            wait_for(lambda: running_children(client, parent_id) >= 3, 30, "pages to be leased")
            executor.process.send_signal(signal.SIGTERM)
            assert executor.process.wait(timeout=20) == 0
            assert running_children(client, parent_id) == 0, "pages stayed leased to an executor that left"
            assert "event=leases_released when=stop" in executor.logs()
    finally:
        executor.stop()
        manager.stop()
        site.stop()


def test_an_executor_the_manager_refuses_says_so_in_its_health_and_its_answers(tmp_path: Path) -> None:
    env = environment(tmp_path)
    manager = start_manager(env)
    wrong = start_executor({**env, "QUAERO_EXECUTOR_TOKEN": "not-the-executor-token"}, manager.address,
                           extra=["--workers", "1"])
    try:
        assert health(wrong.address, "") == health_pb2.HealthCheckResponse.SERVING  # alive
        assert health(wrong.address, EXECUTOR_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        with ManagerClient.connect(manager.address, TOKEN) as client:
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="refused", crawl=definitions_pb2.CrawlConfig(
                    start_urls=["http://app.site.test/"], allowed_networks=[LOCAL_SITES]))))
        channel = open_channel(wrong.address, TOKEN)  # the caller's token is right
        stub = executor_pb2_grpc.ExecutorStub(channel)
        error = expect_error(lambda: stub.ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(
            definition_id="refused")), grpc.StatusCode.FAILED_PRECONDITION, "MANAGER_REJECTED_EXECUTOR_TOKEN")
        assert "QUAERO_EXECUTOR_TOKEN" in error.details()
        channel.close()
        logs = wrong.logs()
        assert "event=manager_link state=down" in logs and "not-the-executor-token" not in logs
        # An executor given the operator token instead is refused by role: the same answer.
        operator_as_executor = start_executor({**env, "QUAERO_EXECUTOR_TOKEN": TOKEN}, manager.address,
                                              extra=["--workers", "1"])
        try:
            assert health(operator_as_executor.address, EXECUTOR_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            operator_as_executor.stop()
    finally:
        wrong.stop()
        manager.stop()


def test_executor_health_follows_the_manager_going_away_and_coming_back(tmp_path: Path) -> None:
    env = environment(tmp_path)
    port = free_port()
    manager = start_manager(env, listen=f"127.0.0.1:{port}")
    executor = start_executor(env, manager.address, extra=["--workers", "1"])
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        wait_for(lambda: health(executor.address, EXECUTOR_SERVICE) == serving, 10, "SERVING with the manager up")
        assert manager.stop() == 0
        wait_for(lambda: health(executor.address, EXECUTOR_SERVICE) == not_serving, 10,
                 "NOT_SERVING with the manager down")
        assert health(executor.address, "") == serving
        manager = start_manager(env, listen=f"127.0.0.1:{port}")
        wait_for(lambda: health(executor.address, EXECUTOR_SERVICE) == serving, 10, "SERVING again")
    finally:
        executor.stop()
        manager.stop()
