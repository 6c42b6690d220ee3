"""JobDefinitions through gRPC on both databases: etags make concurrent edits safe."""
from __future__ import annotations

import grpc

from quaero.api.manager.v1 import definitions_pb2
from quaero.testing.harness import RunningManager
from tests.support.grpc_errors import expect_error


def definition(name: str, depth: int = 1, id: str = "docs") -> definitions_pb2.JobDefinition:
    return definitions_pb2.JobDefinition(id=id, name=name, crawl=definitions_pb2.CrawlConfig(
        start_urls=["https://example.com/"], max_depth=depth))


def test_a_definition_etag_changes_on_each_update_and_guards_concurrent_edits(manager: RunningManager) -> None:
    stub = manager.client.definitions
    created = stub.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition("v1")))
    assert created.etag
    # Two people read the same version; the first update wins, the second is told to read again.
    first = definition("alice", 2)
    first.etag = created.etag
    updated = stub.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(job_definition=first))
    assert updated.etag != created.etag and updated.name == "alice"
    second = definition("bob", 3)
    second.etag = created.etag
    error = expect_error(lambda: stub.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=second)), grpc.StatusCode.ABORTED, "ETAG_MISMATCH", "job_definition.etag")
    assert "read it again" in error.details()
    current = stub.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id="docs"))
    assert current.name == "alice" and current.crawl.max_depth == 2 and current.etag == updated.etag
    # Without an etag an update is unconditional, as before.
    assert stub.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=definition("carol"))).etag not in (created.etag, updated.etag)


def test_delete_with_a_stale_etag_is_aborted_and_keeps_the_definition(manager: RunningManager) -> None:
    stub = manager.client.definitions
    created = stub.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
        job_definition=definition("v1", id="gone")))
    stub.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(job_definition=definition("v2", id="gone")))
    expect_error(lambda: stub.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(
        id="gone", etag=created.etag)), grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    current = stub.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id="gone"))
    stub.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(id="gone", etag=current.etag))
    expect_error(lambda: stub.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id="gone")),
                 grpc.StatusCode.NOT_FOUND, "DEFINITION_NOT_FOUND")


def test_definition_ids_are_checked_the_same_way_everywhere(manager: RunningManager) -> None:
    stub = manager.client.definitions
    for bad in ("ends-in-newline\n", "-leading-dash", "x" * 129, "a b", "a\x00b"):
        expect_error(lambda bad=bad: stub.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=bad)),
                     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION_ID", "id")
        expect_error(lambda bad=bad: stub.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(id=bad)),
                     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION_ID", "id")
        broken = definition("x")
        broken.id = bad
        expect_error(lambda broken=broken: stub.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
            job_definition=broken)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION_ID", "job_definition.id")
