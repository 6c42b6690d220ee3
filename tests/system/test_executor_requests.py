"""No Executor RPC answers INTERNAL (or UNKNOWN) to anything a client can send: every field, hostile values,
on top of requests that name a real definition and a real run."""
from __future__ import annotations

import grpc

from quaero.api.executor.v1 import executor_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import html
from tests.api.test_hostile_requests import REFUSED, mutations


def test_no_request_field_can_make_an_executor_rpc_answer_internal(harness: CrawlHarness) -> None:
    site = harness.site({("app.site.test", "/"): html("home")})
    definition = harness.definition([f"http://app.site.test:{site.port}/"])
    run = harness.start(definition)
    harness.wait(run.parent_job_id)
    stub = harness.executor_stub
    bases = {"ExecuteJobDefinition": executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition),
             "CancelExecution": executor_pb2.CancelExecutionRequest(parent_job_id=run.parent_job_id)}
    failures, calls = [], 0
    for method, base in bases.items():
        for path, request in [("(baseline)", base), *mutations(base)]:
            calls += 1
            try:
                getattr(stub, method)(request, timeout=20)
            except grpc.RpcError as error:
                if error.code() in REFUSED:
                    failures.append(f"{method} {path}: {error.code().name} {error.details()}")
    assert calls > 30
    assert not failures, "\n".join(failures)
