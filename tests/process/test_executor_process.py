"""The services as real processes: the executor rides out a manager restart, and the pages of an
executor that dies return to pending and are finished by another one."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.site import Request, Response, Routes, SiteServer, html
from tests.support.hosts import RESOLVE

APP = "app.site.test"
TOKEN = "process-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slow_site(pages: int, delay: float) -> SiteServer:
    def page(n: int) -> Any:
        def handle(_request: Request) -> Response:
            time.sleep(delay)
            return html(f"page {n}")
        return handle

    routes: dict[tuple[str, str], Any] = {(APP, "/"): html("index", *[f"/p/{n}" for n in range(pages)])}
    routes.update({(APP, f"/p/{n}"): page(n) for n in range(pages)})
    return SiteServer(Routes(routes)).start()


def start_run(executor_address: str, manager: ManagerClient, start_url: str, concurrency: int) -> str:
    definition = definitions_pb2.JobDefinition(id=f"proc-{time.monotonic_ns()}", crawl=definitions_pb2.CrawlConfig(
        start_urls=[start_url], max_depth=1, concurrency=concurrency, allowed_networks=[LOCAL_SITES]))
    manager.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition))
    channel = open_channel(executor_address, TOKEN)
    reply = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
        executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition.id))
    channel.close()
    return reply.parent_job_id


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def documents_of(manager: ManagerClient, parent_id: str) -> int:
    return len(manager.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=parent_id, page_size=1000, omit_text=True)).documents)


def terminal(manager: ManagerClient, parent_id: str) -> jobs_pb2.Job | None:
    job = manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
    return job if job.status not in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING) else None


def test_the_executor_reconnects_after_the_manager_restarts_mid_crawl(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN,
           "QUAERO_RESOLVE": ",".join(f"{h}={a}" for h, a in RESOLVE.items())}
    port = free_port()
    site = slow_site(pages=12, delay=0.1)
    manager = start_manager(env, listen=f"127.0.0.1:{port}")
    executor = start_executor(env, manager.address, extra=["--workers", "2"])
    try:
        client = ManagerClient.connect(manager.address, TOKEN)
        parent_id = start_run(executor.address, client, f"http://{APP}:{site.port}/", concurrency=2)
        wait_for(lambda: documents_of(client, parent_id) >= 3, 30, "the crawl to get going")
        assert manager.stop() == 0
        time.sleep(0.3)
        manager = start_manager(env, listen=f"127.0.0.1:{port}")
        final = wait_for(lambda: terminal(client, parent_id), 90, "the crawl to finish after the restart")
        assert final.status == jobs_pb2.JOB_STATUS_COMPLETED, final.error
        assert documents_of(client, parent_id) == 13
        client.close()
    finally:
        executor.stop()
        manager.stop()
        site.stop()


def test_pages_of_a_killed_executor_return_to_pending_and_another_executor_finishes_them(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN,
           "QUAERO_RESOLVE": ",".join(f"{h}={a}" for h, a in RESOLVE.items())}
    site = slow_site(pages=12, delay=0.3)
    manager = start_manager(env)
    doomed = start_executor(env, manager.address, extra=["--workers", "3", "--lease-seconds", "2"])
    survivor = None
    try:
        client = ManagerClient.connect(manager.address, TOKEN)
        parent_id = start_run(doomed.address, client, f"http://{APP}:{site.port}/", concurrency=3)

        def running_children() -> int:
            stats = client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_id))
            return int(stats.running) if stats.total > 1 else 0

        wait_for(running_children, 30, "children to be leased")
        doomed.kill9()
        killed_at = time.monotonic()
        wait_for(lambda: running_children() == 0, 15, "expired leases to return to pending")
        assert time.monotonic() - killed_at < 8, "leases of a dead executor took too long to expire"
        survivor = start_executor(env, manager.address, extra=["--workers", "3", "--lease-seconds", "2"])
        final = wait_for(lambda: terminal(client, parent_id), 60, "the survivor to finish the crawl")
        assert final.status == jobs_pb2.JOB_STATUS_COMPLETED, final.error
        assert documents_of(client, parent_id) == 13
        client.close()
    finally:
        if survivor:
            survivor.stop()
        manager.stop()
        site.stop()
