"""quaero.manager.v1.JobManager."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc

from quaero.api.manager.v1 import documents_pb2, jobs_pb2, jobs_pb2_grpc

from ..convert import dict_to_struct, struct_to_dict, to_timestamp
from ..documents_store import DocumentInput
from ..errors import InvalidArgument
from ..grpc_common import maps_domain_errors
from ..jobs_store import STATUSES, TERMINAL, ChildSpec, JobStore, etag_of

STATUS_TO_PROTO: dict[str, jobs_pb2.JobStatus.ValueType] = {
    name: jobs_pb2.JobStatus.Value("JOB_STATUS_" + name.upper()) for name in STATUSES}
PROTO_TO_STATUS: dict[int, str] = {value: key for key, value in STATUS_TO_PROTO.items()}
WATCH_POLL_SECONDS = 1.0


def job_to_proto(row: Any) -> jobs_pb2.Job:
    job = jobs_pb2.Job(
        id=row["id"], parent_id=row["parent_id"] or "", type=row["type"], name=row["name"],
        status=STATUS_TO_PROTO[row["status"]], error=row["error"] or "", error_reason=row["error_reason"] or "",
        progress_current=row["progress_current"], progress_total=row["progress_total"],
        children_failed=row["children_failed"], depth=row["depth"], etag=etag_of(row), attempts=row["attempts"] or 0)
    dict_to_struct(row["config"], job.config)
    dict_to_struct(row["metadata"], job.metadata)
    dict_to_struct(row["result"], job.result)
    to_timestamp(row["created_at"], job.create_time)
    to_timestamp(row["started_at"], job.start_time)
    to_timestamp(row["finished_at"], job.finish_time)
    to_timestamp(row["updated_at"], job.update_time)
    if row["status"] == "pending":
        to_timestamp(row.get("not_before"), job.schedule_time)
    return job


def status_name(value: int, field: str = "status", allow_unspecified: bool = False) -> str:
    if value == jobs_pb2.JOB_STATUS_UNSPECIFIED and allow_unspecified:
        return ""
    if value not in PROTO_TO_STATUS:
        raise InvalidArgument("INVALID_STATUS", f"{field} must be one of PENDING, RUNNING, COMPLETED, FAILED, "
                              "CANCELLED", field)
    return PROTO_TO_STATUS[value]


def child_specs(children: Any) -> list[ChildSpec]:
    return [ChildSpec(type=c.type, name=c.name, config=struct_to_dict(c.config), dedup_key=c.dedup_key,
                      depth=c.depth) for c in children]


def document_input(document: documents_pb2.Document) -> DocumentInput | None:
    if not document.url:
        return None
    return DocumentInput(url=document.url, final_url=document.final_url or document.url, title=document.title,
                         text=document.text, content_hash=document.content_hash,
                         content_type=document.content_type, status_code=document.status_code,
                         text_truncated=document.text_truncated)


class JobManagerServicer(jobs_pb2_grpc.JobManagerServicer):
    def __init__(self, store: JobStore,
                 idle: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext) -> None:
        self.store = store
        self._idle = idle  # gives the server's work slot back while a watcher waits

    @maps_domain_errors
    def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.store.create(
            parent_id=request.parent_id, type=request.type, name=request.name,
            config=struct_to_dict(request.config), metadata=struct_to_dict(request.metadata),
            request_id=request.request_id, depth=request.depth))

    @maps_domain_errors
    def BatchCreateChildJobs(self, request: jobs_pb2.BatchCreateChildJobsRequest,
                             context: grpc.ServicerContext) -> jobs_pb2.BatchCreateChildJobsResponse:
        created = self.store.create_children(request.parent_id, child_specs(request.children), request.max_children)
        return jobs_pb2.BatchCreateChildJobsResponse(
            jobs=[job_to_proto(row) for row in created.jobs], duplicates=created.duplicates,
            over_limit=created.over_limit)

    @maps_domain_errors
    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.store.get(request.job_id))

    @maps_domain_errors
    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        rows, token = self.store.list_page(request.parent_id, status_name(request.status, allow_unspecified=True),
                                      request.page_size, request.page_token, request.all_levels)
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in rows], next_page_token=token)

    @maps_domain_errors
    def UpdateJobStatus(self, request: jobs_pb2.UpdateJobStatusRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        result = struct_to_dict(request.result) if request.HasField("result") else None
        return job_to_proto(self.store.update_status(
            request.job_id, status_name(request.status), error=request.error, error_reason=request.error_reason,
            result=result, etag=request.etag))

    @maps_domain_errors
    def UpdateJobProgress(self, request: jobs_pb2.UpdateJobProgressRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.store.update_progress(request.job_id, request.progress_current,
                                                       request.progress_total))

    @maps_domain_errors
    def UpdateJobConfig(self, request: jobs_pb2.UpdateJobConfigRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.store.update_json(
            request.job_id, "config", struct_to_dict(request.config),
            request.mode == jobs_pb2.UPDATE_MODE_REPLACE, request.etag))

    @maps_domain_errors
    def UpdateJobMetadata(self, request: jobs_pb2.UpdateJobMetadataRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        if request.mode not in (jobs_pb2.UPDATE_MODE_UNSPECIFIED, jobs_pb2.UPDATE_MODE_MERGE,
                                jobs_pb2.UPDATE_MODE_REPLACE):
            raise InvalidArgument("INVALID_MODE", "mode must be UPDATE_MODE_MERGE or UPDATE_MODE_REPLACE", "mode")
        return job_to_proto(self.store.update_json(
            request.job_id, "metadata", struct_to_dict(request.metadata),
            request.mode == jobs_pb2.UPDATE_MODE_REPLACE, request.etag))

    @maps_domain_errors
    def AddJobLog(self, request: jobs_pb2.AddJobLogRequest, context: grpc.ServicerContext) -> jobs_pb2.JobLog:
        return log_to_proto(self.store.add_log(request.job_id, request.level, request.message))

    @maps_domain_errors
    def ListJobLogs(self, request: jobs_pb2.ListJobLogsRequest,
                    context: grpc.ServicerContext) -> jobs_pb2.ListJobLogsResponse:
        rows, token = self.store.list_logs(request.job_id, request.page_size, request.page_token,
                                           request.include_children)
        return jobs_pb2.ListJobLogsResponse(logs=[log_to_proto(r) for r in rows], next_page_token=token)

    @maps_domain_errors
    def GetJobStats(self, request: jobs_pb2.GetJobStatsRequest, context: grpc.ServicerContext) -> jobs_pb2.JobStats:
        counts = self.store.stats(request.job_id)
        return jobs_pb2.JobStats(job_id=request.job_id, total=sum(counts.values()), **counts)

    @maps_domain_errors
    def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[jobs_pb2.Job]:
        last: tuple[Any, ...] | None = None
        notifier = self.store.notifier
        notifier.watch()
        try:
            while context.is_active():
                seen = notifier.generation()
                row = self.store.get(request.job_id)
                state = (row["status"], row["progress_current"], row["progress_total"], row["children_failed"])
                if state != last:
                    last = state
                    yield job_to_proto(row)
                if row["status"] in TERMINAL:
                    return
                with self._idle():
                    notifier.wait_for_change(seen, WATCH_POLL_SECONDS)
        finally:
            notifier.unwatch()

    @maps_domain_errors
    def LeaseJobs(self, request: jobs_pb2.LeaseJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.LeaseJobsResponse:
        rows, token = self.store.lease(request.worker_id, request.max_jobs, request.lease_duration.ToTimedelta(),
                                       request.type)
        response = jobs_pb2.LeaseJobsResponse()
        for row in rows:
            leased = response.leased_jobs.add()
            leased.job.CopyFrom(job_to_proto(row))
            leased.lease.job_id = row["id"]
            leased.lease.lease_token = token
            to_timestamp(row["lease_expires_at"], leased.lease.expire_time)
        return response

    @maps_domain_errors
    def RenewLease(self, request: jobs_pb2.RenewLeaseRequest, context: grpc.ServicerContext) -> jobs_pb2.Lease:
        row = self.store.renew_lease(request.job_id, request.lease_token, request.lease_duration.ToTimedelta())
        lease = jobs_pb2.Lease(job_id=row["id"], lease_token=request.lease_token)
        to_timestamp(row["lease_expires_at"], lease.expire_time)
        return lease

    @maps_domain_errors
    def CompleteLeasedJob(self, request: jobs_pb2.CompleteLeasedJobRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        document = document_input(request.document) if request.HasField("document") else None
        return job_to_proto(self.store.complete_leased(
            request.job_id, request.lease_token, status_name(request.status), result=struct_to_dict(request.result),
            error=request.error, error_reason=request.error_reason, document=document,
            children=child_specs(request.children), max_children=request.max_children,
            retry_after=request.retry_after.ToTimedelta()))


def log_to_proto(row: Any) -> jobs_pb2.JobLog:
    log = jobs_pb2.JobLog(id=row["id"], job_id=row["job_id"], level=row["level"], message=row["message"])
    to_timestamp(row["created_at"], log.create_time)
    return log
