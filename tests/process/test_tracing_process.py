"""Tracing across the pair, as processes: a manager and two executors exporting OTLP to a receiver in the
test. One run is one trace, rooted at ExecuteJobDefinition: the parent's metadata write, and every page
(whichever executor leased it) in its own span: from its lease to its record settled, its parent read
timed, each fetch hop an event on it.
No span holds a cookie value or a token."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.otlp import OtlpReceiver, ReceivedSpan
from quaero.testing.processes import start_executor, start_manager
from tests.process.test_executor_process import wait_for
from tests.support.sites import members_site

PAGES = 16
SESSION = "trace-session-value-7f3a9c"
OPERATOR, EXECUTOR = "trace-operator-token-51d2", "trace-executor-token-8be0"


def test_one_run_is_one_trace_across_two_executors(tmp_path: Path, database_url: str) -> None:
    receiver = OtlpReceiver().start()
    site = members_site(PAGES, SESSION, delay=0.25)  # (long enough for both executors to lease)
    shared = {"QUAERO_DATABASE_URL": database_url, "QUAERO_API_TOKEN": OPERATOR, "QUAERO_EXECUTOR_TOKEN": EXECUTOR,
              **receiver.env()}
    manager = start_manager({**shared, "QUAERO_DATA_DIR": str(tmp_path / "m")})
    executors = [start_executor({**shared, "QUAERO_DATA_DIR": str(tmp_path / f"e{n}")}, manager.address,
                                extra=["--workers", "2"]) for n in (1, 2)]
    try:
        with ManagerClient.connect(manager.address, OPERATOR) as client:
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="traced", site_domain="127.0.0.1", cookies=[
                auth_pb2.Cookie(name="session", value=SESSION, domain="127.0.0.1")]))
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="traced", auth_id="traced", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{site.port}/p/0"], max_depth=10, concurrency=4,
                    allowed_networks=[LOCAL_SITES]))))
            with open_channel(executors[0].address, OPERATOR) as channel:
                run = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
                    executor_pb2.ExecuteJobDefinitionRequest(definition_id="traced"))
            final = wait_for(lambda: (lambda job: job if job.status not in (
                jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING) else None)(
                client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.parent_job_id))), 60, "the run to end")
            assert final.status == jobs_pb2.JOB_STATUS_COMPLETED and final.progress_current == PAGES, final.error
            assert "traceparent" in final.metadata["trace_context"]
        wait_for(lambda: sum(1 for s in receiver.spans() if s.name == "crawl_page") >= PAGES or None, 20,
                 "every page's spans to be exported")
    finally:
        for process in [*executors, manager]:
            process.stop()
        site.stop()
    time.sleep(0.3)
    spans = receiver.spans()
    receiver.stop()

    roots = [s for s in spans if s.name == "/quaero.executor.v1.Executor/ExecuteJobDefinition"]
    assert len(roots) == 1 and roots[0].parent_span_id == "" and roots[0].service == "quaero-executor"
    root = roots[0]
    run_spans = [s for s in spans if s.trace_id == root.trace_id]
    by_id = {s.span_id: s for s in run_spans}

    def children(span: ReceivedSpan, name: str) -> list[ReceivedSpan]:
        return [s for s in run_spans if s.parent_span_id == span.span_id and s.name == name]

    # The parent's metadata is written inside ExecuteJobDefinition, and the manager's side joins the trace.
    [update] = children(root, "/quaero.manager.v1.JobManager/UpdateJobMetadata")
    [served] = children(update, "/quaero.manager.v1.JobManager/UpdateJobMetadata")
    assert served.service == "quaero-manager" and update.service == "quaero-executor"
    assert children(root, "/quaero.manager.v1.JobManager/BatchCreateChildJobs")

    # Every page is in the run's trace, directly under its root; both executors took some.
    pages = children(root, "crawl_page")
    assert len(pages) == PAGES, f"{len(pages)} page spans in the run's trace"
    assert {s.attributes["url.full"] for s in pages} == {f"http://127.0.0.1:{site.port}/p/{n}" for n in range(PAGES)}
    workers = Counter(s.attributes["quaero.worker_id"] for s in pages)
    assert len(workers) == 2, f"one executor took every page: {workers}"
    assert any(name == "GET robots.txt" for page in pages for name, _facts in page.events)
    for page in pages:
        assert page.attributes["quaero.status"] == "JOB_STATUS_COMPLETED"
        # The lease that brought it, its parent read and its record, timed; each fetch hop an event.
        assert page.attributes["quaero.lease_ms"] > 0 and page.attributes["quaero.parent_read_ms"] >= 0
        assert page.attributes["quaero.record_ms"] > 0 and "quaero.recorded" not in page.attributes  # (it was)
        hops = [name for name, _facts in page.events]
        assert hops.count("GET") == 1, hops  # (one hop: no redirect on this site; robots.txt for the first page)
        [fetched] = [facts for name, facts in page.events if name == "GET"
                     and facts["url.full"] == page.attributes["url.full"]]
        assert fetched["http.response.status_code"] == 200
        # Nothing else of the request or its answer (no header, no cookie).
        assert set(fetched) == {"url.full", "http.response.status_code", "quaero.duration_ms"}
    assert all(by_id.get(s.parent_span_id) is not None for s in run_spans if s is not root)  # (one tree)
    # The credentials were read for the pages inside their spans: the manager served them in the trace.
    assert any(s.name == "/quaero.manager.v1.AuthStore/GetCredentials" and s.service == "quaero-manager"
               for s in run_spans)
    # Calls made outside any span (leases, renewals, batched completions) start no trace of their own.
    assert not [s for s in spans if s.trace_id != root.trace_id and "Lease" in s.name]

    # No secret anywhere in what was exported.
    exported = repr([(s.name, s.attributes, s.events, s.status_message) for s in spans])
    for secret in (SESSION, OPERATOR, EXECUTOR):
        assert secret not in exported
