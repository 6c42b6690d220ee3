"""The reads the console needs, on both databases: runs of one definition, a run's children that ended
with one reason, and a log's tail (newest first, paged backwards)."""
from __future__ import annotations

import grpc
from google.protobuf import struct_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import RunningManager
from tests.support.grpc_errors import expect_error


def run_of(manager: RunningManager, definition_id: str) -> jobs_pb2.Job:
    config = struct_pb2.Struct()
    config.update({"job_definition_id": definition_id})
    return manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawler", name="run", config=config))


def test_runs_of_one_definition_newest_first_and_paged(manager: RunningManager) -> None:
    mine = [run_of(manager, "mine").id for _ in range(5)]
    others = [run_of(manager, "other").id for _ in range(2)]
    seen, token = [], ""
    while True:
        page = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id="mine", page_size=2,
                                                                     page_token=token))
        seen += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(mine))
    assert [job.id for job in manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id="other")).jobs] \
        == list(reversed(others))
    assert not manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id="none")).jobs
    mine_token = manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id="mine", page_size=1)).next_page_token
    expect_error(lambda: manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id="other",
                                                                               page_token=mine_token)),
                 grpc.StatusCode.INVALID_ARGUMENT)


def test_children_that_ended_with_one_reason(manager: RunningManager) -> None:
    jobs = manager.client.jobs
    parent = jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawler", name="run"))
    children = [jobs.CreateJob(jobs_pb2.CreateJobRequest(type="page", name=f"p{n}", parent_id=parent.id))
                for n in range(6)]
    reasons = ["FETCH_TIMEOUT", "FETCH_TIMEOUT", "BLOCKED_ADDRESS", "", "", ""]
    for child, reason in zip(children, reasons, strict=True):
        jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=child.id, status=jobs_pb2.JOB_STATUS_RUNNING))
        if reason:
            jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=child.id, status=jobs_pb2.JOB_STATUS_FAILED,
                                                                 error="why", error_reason=reason))
    timeouts = jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, error_reason="FETCH_TIMEOUT")).jobs
    assert sorted(job.id for job in timeouts) == sorted(c.id for c in children[:2])
    failed_blocked = jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, status=jobs_pb2.JOB_STATUS_FAILED,
                                                            error_reason="BLOCKED_ADDRESS")).jobs
    assert [job.id for job in failed_blocked] == [children[2].id]
    expect_error(lambda: jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent.id, error_reason="X" * 65)),
                 grpc.StatusCode.INVALID_ARGUMENT, field="error_reason")


def test_a_log_tail_newest_first_paged_backwards(manager: RunningManager) -> None:
    jobs = manager.client.jobs
    parent = jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawler", name="run"))
    child = jobs.CreateJob(jobs_pb2.CreateJobRequest(type="page", name="p", parent_id=parent.id))
    written = []
    for n in range(7):
        job = parent if n % 2 else child
        written.append(jobs.AddJobLog(jobs_pb2.AddJobLogRequest(job_id=job.id, level=jobs_pb2.LOG_LEVEL_INFO,
                                                                 message=f"line {n}")).message)
    seen, token = [], ""
    while True:
        page = jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=parent.id, include_children=True,
                                                            newest_first=True, page_size=3, page_token=token))
        seen += [log.message for log in page.logs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(written))
    own = jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=parent.id, newest_first=True, page_size=2)).logs
    assert [log.message for log in own] == ["line 5", "line 3"]
    oldest_first_token = jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=parent.id, page_size=1)).next_page_token
    expect_error(lambda: jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=parent.id, newest_first=True,
                                                                      page_token=oldest_first_token)),
                 grpc.StatusCode.INVALID_ARGUMENT)
