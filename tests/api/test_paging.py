"""Paging as a client in another language meets it (AIP-158): opaque tokens bound to the filters,
stable while rows are created, and pages that fit gRPC's default 4 MiB message limit."""
from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import RunningManager
from tests.support.grpc_errors import expect_error


def create(manager: RunningManager, parent_id: str = "", **metadata: Any) -> jobs_pb2.Job:
    data = struct_pb2.Struct()
    data.update(metadata)
    return manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", name="n", parent_id=parent_id,
                                                                   metadata=data))


def test_jobs_created_between_pages_neither_repeat_nor_push_others_off(manager: RunningManager) -> None:
    parent = create(manager)
    before = [create(manager, parent.id).id for _ in range(6)]
    first = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=3))
    newer = [create(manager, parent.id).id for _ in range(4)]  # newest first: they sort before the cursor
    seen = [job.id for job in first.jobs]
    token = first.next_page_token
    while token:
        page = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=3,
                                                                     page_token=token))
        seen.extend(job.id for job in page.jobs)
        token = page.next_page_token
    assert seen == list(reversed(before)), "every job that existed at the first page, once, newest first"
    assert not set(newer) & set(seen)


def test_a_token_is_bound_to_the_filters_it_was_made_for(manager: RunningManager) -> None:
    parent, other = create(manager), create(manager)
    for _ in range(3):
        create(manager, parent.id)
    token = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=1)).next_page_token
    assert token
    for request in (jobs_pb2.ListJobsRequest(parent_id=other.id, page_token=token),
                    jobs_pb2.ListJobsRequest(parent_id=parent.id, status=jobs_pb2.JOB_STATUS_RUNNING, page_token=token),
                    jobs_pb2.ListJobsRequest(page_token=token)):
        expect_error(lambda request=request: manager.client.jobs.ListJobs(request), grpc.StatusCode.INVALID_ARGUMENT,
                     "PAGE_TOKEN_MISMATCH", "page_token")
    # the page size may change between pages
    manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=50, page_token=token))
    logs_token = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id,
                                                                       page_size=1)).next_page_token
    expect_error(lambda: manager.client.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(
        job_id=parent.id, page_token=logs_token)), grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_MISMATCH")


def test_forged_and_old_style_tokens_are_invalid_argument(manager: RunningManager) -> None:
    for token in ("3", str(2**63), "-1", "garbage", "eyJ4IjoxfQ.AAAAAAAAAAAAAAAAAAAAAA"):
        expect_error(lambda token=token: manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token=token)),
                     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "page_token")


def test_a_page_of_large_jobs_fits_a_default_4_mib_client_and_basic_leaves_the_objects_out(
        manager: RunningManager) -> None:
    parent = create(manager)
    blob = "x" * (60 * 1024)
    ids = {create(manager, parent.id, blob=blob).id for _ in range(100)}
    # A client with gRPC's default limits, as in every other language (no raised receive limit).
    with grpc.insecure_channel(manager.address) as channel:
        list_jobs = channel.unary_unary("/quaero.manager.v1.JobManager/ListJobs",
                                        request_serializer=jobs_pb2.ListJobsRequest.SerializeToString,
                                        response_deserializer=jobs_pb2.ListJobsResponse.FromString)
        auth = [("authorization", f"Bearer {manager.token}")]
        seen: set[str] = set()
        pages, token = 0, ""
        while True:
            page = list_jobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=100, page_token=token),
                             metadata=auth, timeout=30)
            assert page.ByteSize() < 4 * 1024 * 1024
            pages += 1
            seen.update(job.id for job in page.jobs)
            token = page.next_page_token
            if not token:
                break
        assert seen == ids and pages >= 2
        basic = list_jobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, page_size=100, view=jobs_pb2.JOB_VIEW_BASIC),
                          metadata=auth, timeout=30)
        assert len(basic.jobs) == 100 and not basic.next_page_token
        assert all(not job.HasField("metadata") and job.id and job.status for job in basic.jobs)


def test_a_lease_answer_fits_4_mib_and_what_did_not_fit_stays_pending_uncounted(manager: RunningManager) -> None:
    parent = create(manager)
    config = struct_pb2.Struct()
    config.update({"blob": "y" * (60 * 1024)})
    kind = "big-page"
    manager.client.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(parent_id=parent.id, children=[
        jobs_pb2.ChildJobSpec(type=kind, name=f"c{n}", dedup_key=f"c{n}", config=config) for n in range(80)]))
    with manager.connect_as_executor() as executor:  # gRPC's default 4 MiB receive limit
        first = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w", max_jobs=100, type=kind))
        assert 0 < len(first.leased_jobs) < 80 and first.ByteSize() < 4 * 1024 * 1024
        stats = manager.client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent.id))
        assert stats.running == len(first.leased_jobs) and stats.pending == 80 - len(first.leased_jobs)
        rest = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w", max_jobs=100, type=kind))
        assert {j.job.attempts for j in rest.leased_jobs} == {1}, "the give-back was not counted as an attempt"
