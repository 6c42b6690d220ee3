"""Prometheus metrics on both services: RPCs by method and code, pages by verdict, fetch latency, leases,
watchers and pending children, scraped over HTTP from the real processes after a small crawl."""
from __future__ import annotations

from pathlib import Path

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.metrics import scrape
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.site import Routes, SiteServer, html
from tests.process.test_executor_process import wait_for

TOKEN = "metrics-token"


def run_to_completion(executor_address: str, client: ManagerClient, definition_id: str) -> jobs_pb2.Job:
    """Runs the definition through the executor's API and waits for its run to complete."""
    channel = open_channel(executor_address, TOKEN)
    run = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
        executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition_id))
    channel.close()
    wait_for(lambda: client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.parent_job_id)).status
             == jobs_pb2.JOB_STATUS_COMPLETED, 60, "the crawl")
    return client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.parent_job_id))


def test_both_services_serve_prometheus_metrics(tmp_path: Path) -> None:
    site = SiteServer(Routes({("127.0.0.1", "/"): html("home", "/a", "/b", "/missing"),
                              ("127.0.0.1", "/a"): html("a"), ("127.0.0.1", "/b"): html("b")})).start()
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN}
    manager = start_manager(env, extra=["--metrics-listen", "127.0.0.1:0"])
    executor = start_executor(env, manager.address, extra=["--workers", "2", "--metrics-listen", "127.0.0.1:0"])
    try:
        with ManagerClient.connect(manager.address, TOKEN) as client:
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="metered", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{site.port}/"], allowed_networks=[LOCAL_SITES],
                    max_depth=1), max_child_failures=5)))
            run_to_completion(executor.address, client, "metered")
        managed = scrape(manager.banner)
        executed = scrape(executor.banner)
        # four pages recorded in one to four calls (records that queue up are sent together)
        assert 1 <= managed['quaero_rpc_total{code="OK",method="CompleteLeasedJobs"}'] <= 4
        assert managed['quaero_rpc_total{code="OK",method="CreateJobDefinition"}'] == 1
        assert managed['quaero_rpc_seconds_count{code="OK",method="GetJob"}'] >= 4
        assert managed["quaero_pending_children"] == 0 and managed["quaero_watchers"] == 0
        assert managed["quaero_leases_expired_total"] == 0
        # four pages, the 404 among them (stored with its status code, as every answer is)
        assert executed['quaero_pages_total{status="JOB_STATUS_COMPLETED",verdict="OK"}'] == 4
        assert executed['quaero_fetch_seconds_count{outcome="fetched"}'] >= 3
        assert executed["quaero_manager_reachable"] == 1 and executed["quaero_pages_in_flight"] == 0
        assert 'quaero_rpc_total{code="OK",method="ExecuteJobDefinition"}' in executed
    finally:
        executor.stop()
        manager.stop()
        site.stop()


def test_records_lease_the_next_pages_in_their_own_call(tmp_path: Path) -> None:
    """A batch of records leases the next pages in the same CompleteLeasedJobs call (lease_next): a crawl
    makes a LeaseJobs call only when no record is on its way (its start, and when its tree is narrow), not
    one per two or three pages (30-31 calls for these 82 pages with 4 workers without lease_next; 6-9 with it)."""
    pages = {("127.0.0.1", f"/p/{n}"): html(f"p{n}", f"/p/{2 * n + 1}", f"/p/{2 * n + 2}") for n in range(40)}
    site = SiteServer(Routes({("127.0.0.1", "/"): html("home", "/p/0"), **pages})).start()
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN}
    manager = start_manager(env, extra=["--metrics-listen", "127.0.0.1:0"])
    executor = start_executor(env, manager.address, extra=["--workers", "4"])
    try:
        with ManagerClient.connect(manager.address, TOKEN) as client:
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="tree", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{site.port}/"], allowed_networks=[LOCAL_SITES], max_depth=10,
                    concurrency=4), max_child_failures=100)))
            before = scrape(manager.banner)
            crawled = run_to_completion(executor.address, client, "tree").progress_current
        after = scrape(manager.banner)

        def calls(method: str) -> float:
            key = f'quaero_rpc_total{{code="OK",method="{method}"}}'
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert crawled == 82  # home, /p/0../p/39 and the 41 links beyond them (404s, stored as answered)
        assert calls("CompleteLeasedJobs") >= 10
        assert calls("LeaseJobs") <= 82 / 4, f"{calls('LeaseJobs')} LeaseJobs calls for {crawled} pages"
    finally:
        executor.stop()
        manager.stop()
        site.stop()
