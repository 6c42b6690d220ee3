"""Two tokens, two roles: the operator's cannot read cookie values or hold leases, the executor's cannot
change credentials or definitions or read documents. The Bearer scheme is matched in any case."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.testing.harness import RunningManager
from tests.support.grpc_errors import expect_error

SECRET = "cookie-value-7f3a"


def put(client: ManagerClient) -> auth_pb2.CredentialsInfo:
    return client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(
        id="site", site_domain="example.com", cookies=[auth_pb2.Cookie(name="sid", value=SECRET, domain="example.com")]))


OPERATOR_REFUSED: list[tuple[str, Callable[[ManagerClient], Any]]] = [
    ("GetCredentials", lambda c: c.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="site"))),
    ("LeaseJobs", lambda c: c.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w"))),
    ("RenewLease", lambda c: c.jobs.RenewLease(jobs_pb2.RenewLeaseRequest(job_id="x", lease_token="t"))),
    ("CompleteLeasedJob", lambda c: c.jobs.CompleteLeasedJob(jobs_pb2.CompleteLeasedJobRequest(job_id="x"))),
    ("ReleaseLeases", lambda c: c.jobs.ReleaseLeases(jobs_pb2.ReleaseLeasesRequest(worker_id="w"))),
]
EXECUTOR_REFUSED: list[tuple[str, Callable[[ManagerClient], Any]]] = [
    ("PutCredentials", put),
    ("ListCredentials", lambda c: c.auth.ListCredentials(auth_pb2.ListCredentialsRequest())),
    ("DeleteCredentials", lambda c: c.auth.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(id="site"))),
    ("CreateJobDefinition", lambda c: c.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest())),
    ("DeleteJobDefinition", lambda c: c.definitions.DeleteJobDefinition(
        definitions_pb2.DeleteJobDefinitionRequest(id="d"))),
    ("ListDocuments", lambda c: c.documents.ListDocuments(documents_pb2.ListDocumentsRequest())),
]


@pytest.mark.parametrize("name,call", OPERATOR_REFUSED, ids=[name for name, _ in OPERATOR_REFUSED])
def test_the_operator_token_cannot_read_cookie_values_or_hold_leases(sqlite_manager: RunningManager, name: str,
                                                                     call: Callable[[ManagerClient], Any]) -> None:
    put(sqlite_manager.client)
    error = expect_error(lambda: call(sqlite_manager.client), grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    assert name in error.details() and "QUAERO_EXECUTOR_TOKEN" in error.details()


@pytest.mark.parametrize("name,call", EXECUTOR_REFUSED, ids=[name for name, _ in EXECUTOR_REFUSED])
def test_the_executor_token_cannot_change_credentials_definitions_or_read_documents(
        sqlite_manager: RunningManager, name: str, call: Callable[[ManagerClient], Any]) -> None:
    put(sqlite_manager.client)
    with sqlite_manager.connect_as_executor() as executor:
        error = expect_error(lambda: call(executor), grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    assert name in error.details() and "QUAERO_API_TOKEN" in error.details()
    # nothing changed
    assert [c.id for c in sqlite_manager.client.auth.ListCredentials(auth_pb2.ListCredentialsRequest()).credentials] \
        == ["site"]


def test_each_role_does_its_own_work_and_only_the_executor_sees_cookie_values(sqlite_manager: RunningManager) -> None:
    operator = sqlite_manager.client
    info = put(operator)
    assert SECRET not in str(info) and SECRET not in str(operator.auth.ListCredentials(
        auth_pb2.ListCredentialsRequest()))
    parent = operator.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawl", name="p"))
    operator.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(
        parent_id=parent.id, children=[jobs_pb2.ChildJobSpec(type="page", name="c", dedup_key="c")]))
    with sqlite_manager.connect_as_executor() as executor:
        assert executor.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id="site")).cookies[0].value == SECRET
        leased = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w")).leased_jobs
        assert len(leased) == 1
        executor.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent.id))  # job calls are open to both


@pytest.mark.parametrize("header", ["Bearer {}", "bearer {}", "BEARER {}", "Bearer   {}", "bEaReR {} "])
def test_the_bearer_scheme_is_matched_in_any_case(sqlite_manager: RunningManager, header: str) -> None:
    with grpc.insecure_channel(sqlite_manager.address) as channel:
        call = channel.unary_unary("/quaero.manager.v1.JobManager/ListJobs",
                                   request_serializer=jobs_pb2.ListJobsRequest.SerializeToString,
                                   response_deserializer=jobs_pb2.ListJobsResponse.FromString)
        call(jobs_pb2.ListJobsRequest(), metadata=[("authorization", header.format(sqlite_manager.token))], timeout=5)
        expect_error(lambda: call(jobs_pb2.ListJobsRequest(), metadata=[
            ("authorization", header.format("not-the-token"))], timeout=5), grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_INVALID")
        expect_error(lambda: call(jobs_pb2.ListJobsRequest(), metadata=[
            ("authorization", f"Basic {sqlite_manager.token}")], timeout=5), grpc.StatusCode.UNAUTHENTICATED)


def test_refusals_and_answers_alternate_on_one_method(sqlite_manager: RunningManager) -> None:
    # The interceptors wrap a method's handler once and reuse it: a refusal in between must not stick
    # to the method, nor an answer let the next wrong token through.
    job = sqlite_manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", name="n"))
    request = jobs_pb2.GetJobRequest(job_id=job.id)
    with sqlite_manager.connect("wrong-token") as wrong, sqlite_manager.connect_as_executor() as executor:
        for _ in range(2):
            expect_error(lambda: wrong.jobs.GetJob(request), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
            assert sqlite_manager.client.jobs.GetJob(request).id == job.id
            assert executor.jobs.GetJob(request).id == job.id
            expect_error(lambda: sqlite_manager.client.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w")),
                         grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
            assert executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w", max_jobs=1)) is not None
