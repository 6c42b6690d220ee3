"""Two managers and two executors on one PostgreSQL, as processes, each executor given both managers:
kill -9 one manager and one executor in the middle of a crawl, and the run still completes with every
page stored once."""
from __future__ import annotations

import time
from pathlib import Path

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import start_executor, start_manager
from tests.process.test_executor_process import wait_for
from tests.support.sites import members_site

PAGES = 60
SESSION = "scale-out-session"


def test_a_run_survives_losing_a_manager_and_an_executor(tmp_path: Path, postgres_url: str) -> None:
    shared = {"QUAERO_DATABASE_URL": postgres_url, "QUAERO_API_TOKEN": "scale-operator",
              "QUAERO_EXECUTOR_TOKEN": "scale-executor", "QUAERO_SECRET_KEY": "one passphrase for both managers"}
    site = members_site(PAGES, SESSION, delay=0.15)
    managers = [start_manager({**shared, "QUAERO_DATA_DIR": str(tmp_path / f"m{n}")}) for n in (1, 2)]
    both = ",".join(manager.address for manager in managers)
    executors = [start_executor({**shared, "QUAERO_DATA_DIR": str(tmp_path / f"e{n}")}, both,
                                extra=["--workers", "3", "--lease-seconds", "3"]) for n in (1, 2)]
    try:
        with ManagerClient.connect(managers[1].address, "scale-operator") as client:
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="scale", site_domain="127.0.0.1", cookies=[
                auth_pb2.Cookie(name="session", value=SESSION, domain="127.0.0.1")]))
            definition_id = client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(
                    id=f"scale-{time.monotonic_ns()}", auth_id="scale", crawl=definitions_pb2.CrawlConfig(
                        start_urls=[f"http://127.0.0.1:{site.port}/p/0"], max_depth=10, concurrency=6,
                        allowed_networks=[LOCAL_SITES])))).id
            channel = open_channel(executors[0].address, "scale-operator")
            run = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
                executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition_id))
            channel.close()

            def stored() -> int:
                return len(client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
                    parent_job_id=run.parent_job_id, page_size=1000, omit_text=True)).documents)

            wait_for(lambda: stored() >= 10, 60, "the crawl to get going")
            managers[0].kill9()
            executors[0].kill9()
            final = wait_for(lambda: (lambda job: job if job.status not in (
                jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING) else None)(
                client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.parent_job_id))), 120, "the run to end")
            assert final.status == jobs_pb2.JOB_STATUS_COMPLETED, final.error
            documents = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
                parent_job_id=run.parent_job_id, page_size=1000, omit_text=True)).documents
            urls = [document.url for document in documents]
            assert len(urls) == len(set(urls)) == PAGES, "a page was lost or stored twice"
            children = list(client.iter_children(run.parent_job_id))
            assert len(children) == PAGES and all(c.status == jobs_pb2.JOB_STATUS_COMPLETED for c in children)
            assert final.progress_current == final.progress_total == PAGES
    finally:
        for process in executors + managers:
            process.stop()
        site.stop()
