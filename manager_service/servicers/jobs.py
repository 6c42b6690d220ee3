"""quaero.manager.v1.JobManager: proto <-> storage records; errors are mapped by the server's
ExceptionToStatus interceptor."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from quaero.api.manager.v1 import documents_pb2, jobs_pb2, jobs_pb2_grpc
from quaero.convert import (
    dict_to_struct,
    job_status,
    job_status_to_proto,
    message_size,
    session_cookie_from_proto,
    session_cookie_to_proto,
    struct_to_dict,
    to_timestamp,
)
from quaero.errors import InvalidArgument, QuaeroError, Reason
from quaero.ids import check_job_id
from quaero.job_status import JobStatus
from quaero.rpc.interceptors import PUSHED, pushed_stream
from quaero.rpc.status import code_number

from ..storage.jobs import JobStore
from ..storage.leases import MAX_COMPLETIONS_AT_ONCE, LeaseQueue, LeaseRequest
from ..storage.paging import MAX_PAGE_BYTES
from ..storage.records import ChildSpec, Completion, DocumentCounts, DocumentInput, Job, JobLog
from ..storage.retention import Retention
from ..watch_streams import WatchStreams


def job_to_proto(job: Job, basic: bool = False) -> jobs_pb2.Job:
    """The Job message; `basic` (JOB_VIEW_BASIC) leaves config, metadata and result out."""
    message = jobs_pb2.Job(
        id=job.id, parent_id=job.parent_id or "", type=job.type, name=job.name, status=job_status_to_proto(job.status),
        error=job.error, error_reason=job.error_reason, progress_current=job.progress_current,
        progress_total=job.progress_total, children_failed=job.children_failed, depth=job.depth, etag=job.etag,
        attempts=job.attempts, metadata_etag=job.metadata_etag)
    if not basic:
        dict_to_struct(job.config, message.config)
        dict_to_struct(job.metadata, message.metadata)
        dict_to_struct(job.result, message.result)
    to_timestamp(job.created_at, message.create_time)
    to_timestamp(job.started_at, message.start_time)
    to_timestamp(job.finished_at, message.finish_time)
    to_timestamp(job.updated_at, message.update_time)
    if job.status == JobStatus.PENDING:
        to_timestamp(job.not_before, message.schedule_time)
    if job.parent_id is None:
        message.definition_id = job.definition_id
        counts_to_proto(job.documents, message.documents)
    return message


def counts_to_proto(counts: DocumentCounts, message: jobs_pb2.DocumentCounts) -> None:
    message.new, message.changed, message.unchanged, message.gone = (counts.new, counts.changed, counts.unchanged,
                                                                     counts.gone)


def log_to_proto(log: JobLog) -> jobs_pb2.JobLog:
    message = jobs_pb2.JobLog(id=log.id, job_id=log.job_id, level=log.level, message=log.message)  # type: ignore[arg-type]
    to_timestamp(log.created_at, message.create_time)
    return message


def completion_input(request: jobs_pb2.CompleteLeasedJobRequest) -> Completion:
    return Completion(
        request.job_id, request.lease_token, job_status(request.status), struct_to_dict(request.result, "result"),
        request.error, request.error_reason, document_input(request.document) if request.HasField("document") else None,
        child_specs(request.children), request.max_children, request.retry_after.ToTimedelta(),
        [session_cookie_from_proto(item) for item in request.session_cookies])


def child_specs(children: Any) -> list[ChildSpec]:
    return [ChildSpec(type=c.type, name=c.name, config=struct_to_dict(c.config, f"children[{index}].config"),
                      dedup_key=c.dedup_key, depth=c.depth) for index, c in enumerate(children)]


def document_input(document: documents_pb2.Document) -> DocumentInput | None:
    if not document.url:
        return None
    return DocumentInput(url=document.url, final_url=document.final_url or document.url, title=document.title,
                         text=document.text, content_hash=document.content_hash,
                         content_type=document.content_type, status_code=document.status_code,
                         text_truncated=document.text_truncated, etag=document.etag,
                         last_modified=document.last_modified, auth_id=document.auth_id, links=list(document.links),
                         not_modified=document.not_modified, previous_document_id=document.previous_document_id)


class JobManagerServicer(jobs_pb2_grpc.JobManagerServicer):
    def __init__(self, jobs: JobStore, leases: LeaseQueue, streams: WatchStreams,
                 caller: Callable[[grpc.ServicerContext], str] = lambda _context: "",
                 retention: Retention | None = None) -> None:
        self.retention = retention
        self.jobs = jobs
        self.leases = leases
        self.streams = streams
        self._caller = caller  # the caller's role: request ids are scoped by it

    def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.jobs.create(
            parent_id=request.parent_id, type=request.type, name=request.name,
            config=struct_to_dict(request.config, "config"), metadata=struct_to_dict(request.metadata, "metadata"),
            request_id=request.request_id, depth=request.depth,
            caller=self._caller(context) if request.request_id else ""))

    def BatchCreateChildJobs(self, request: jobs_pb2.BatchCreateChildJobsRequest,
                             context: grpc.ServicerContext) -> jobs_pb2.BatchCreateChildJobsResponse:
        created = self.jobs.create_children(request.parent_id, child_specs(request.children), request.max_children)
        # The basic view: the caller sent the configs; a full answer could outgrow 4 MiB.
        return jobs_pb2.BatchCreateChildJobsResponse(
            jobs=[job_to_proto(job, basic=True) for job in created.jobs], duplicates=created.duplicates,
            over_limit=created.over_limit)

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.jobs.get(request.job_id))

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        status = job_status(request.status) if request.status != jobs_pb2.JOB_STATUS_UNSPECIFIED else None
        listing = self.jobs.list_page(request.parent_id, status, request.page_size, request.page_token,
                                      request.all_levels, request.definition_id, request.error_reason)
        basic = request.view == jobs_pb2.JOB_VIEW_BASIC
        jobs, token = listing.cut(lambda job: job_to_proto(job, basic), message_size)
        return jobs_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    def UpdateJobStatus(self, request: jobs_pb2.UpdateJobStatusRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        result = struct_to_dict(request.result, "result") if request.HasField("result") else None
        return job_to_proto(self.jobs.update_status(
            request.job_id, job_status(request.status), error=request.error, error_reason=request.error_reason,
            result=result, etag=request.etag))

    def UpdateJobProgress(self, request: jobs_pb2.UpdateJobProgressRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.jobs.update_progress(request.job_id, request.progress_current,
                                                      request.progress_total))

    def UpdateJobConfig(self, request: jobs_pb2.UpdateJobConfigRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.jobs.update_json(
            request.job_id, "config", struct_to_dict(request.config, "config"),
            request.mode == jobs_pb2.UPDATE_MODE_REPLACE, request.etag))

    def UpdateJobMetadata(self, request: jobs_pb2.UpdateJobMetadataRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        if request.mode not in (jobs_pb2.UPDATE_MODE_UNSPECIFIED, jobs_pb2.UPDATE_MODE_MERGE,
                                jobs_pb2.UPDATE_MODE_REPLACE):
            raise InvalidArgument(Reason.INVALID_MODE, "mode must be UPDATE_MODE_MERGE or UPDATE_MODE_REPLACE", "mode")
        return job_to_proto(self.jobs.update_json(
            request.job_id, "metadata", struct_to_dict(request.metadata, "metadata"),
            request.mode == jobs_pb2.UPDATE_MODE_REPLACE, request.etag))

    def AddJobLog(self, request: jobs_pb2.AddJobLogRequest, context: grpc.ServicerContext) -> jobs_pb2.JobLog:
        return log_to_proto(self.jobs.add_log(request.job_id, request.level, request.message))

    def ListJobLogs(self, request: jobs_pb2.ListJobLogsRequest,
                    context: grpc.ServicerContext) -> jobs_pb2.ListJobLogsResponse:
        logs, token = self.jobs.list_logs(request.job_id, request.page_size, request.page_token,
                                          request.include_children, request.newest_first).cut(log_to_proto, message_size)
        return jobs_pb2.ListJobLogsResponse(logs=logs, next_page_token=token)

    def GetJobStats(self, request: jobs_pb2.GetJobStatsRequest, context: grpc.ServicerContext) -> jobs_pb2.JobStats:
        job, counts = self.jobs.stats(request.job_id)
        stats = jobs_pb2.JobStats(job_id=job.id, total=sum(counts.values()))
        for status, count in counts.items():
            setattr(stats, status.value, count)
        counts_to_proto(job.documents, stats.documents)
        return stats

    @pushed_stream
    def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext,  # type: ignore[override]
                 send: Callable[[jobs_pb2.Job | None], None]) -> object:
        # No thread waits for the stream: WatchStreams sends its messages (watch_streams.py).
        self.streams.open(check_job_id(request.job_id), self.jobs.get, context, send)
        return PUSHED

    def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context: grpc.ServicerContext) -> jobs_pb2.DeleteJobResponse:
        assert self.retention is not None
        deleted = self.retention.delete_run(request.job_id, request.cancel)
        return jobs_pb2.DeleteJobResponse(jobs_deleted=deleted.jobs, logs_deleted=deleted.logs,
                                          documents_deleted=deleted.documents, contents_deleted=deleted.contents)

    def LeaseJobs(self, request: jobs_pb2.LeaseJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.LeaseJobsResponse:
        jobs, token = self.leases.lease(request.worker_id, request.max_jobs, request.lease_duration.ToTimedelta(),
                                        request.type)
        response = jobs_pb2.LeaseJobsResponse()
        self._answer_lease(jobs, token, request.known_sessions, response)
        return response

    def _answer_lease(self, jobs: list[Job], token: str, known_sessions: Any,
                      response: jobs_pb2.LeaseJobsResponse) -> None:
        """The leased jobs with their previous versions and the sessions of their runs the worker lacks;
        those that do not fit the answer go straight back to pending."""
        previous = self.leases.previous_versions(jobs)
        used = 0
        for index, job in enumerate(jobs):
            message = job_to_proto(job)
            version = previous.get(job.id)
            before = None if version is None else documents_pb2.PreviousVersion(
                document_id=version.document_id, final_url=version.final_url, etag=version.etag,
                last_modified=version.last_modified, content_hash=version.content_hash, auth_id=version.auth_id,
                links=version.links)
            used += message_size(message) + (message_size(before) if before is not None else 0)
            if index and used > MAX_PAGE_BYTES:
                # Jobs whose objects fill the answer: the rest go straight back, for the next call.
                self.leases.unlease([other.id for other in jobs[index:]], token)
                break
            leased = response.leased_jobs.add()
            leased.job.CopyFrom(message)
            leased.lease.job_id = job.id
            leased.lease.lease_token = token
            to_timestamp(job.lease_expires_at, leased.lease.expire_time)
            if before is not None:
                leased.previous.CopyFrom(before)
        parents = [leased.job.parent_id for leased in response.leased_jobs if leased.job.parent_id]
        for run in self.leases.sessions.newer_than(parents, known_sessions):
            session = response.sessions.add(parent_job_id=run.parent_id, version=run.version)
            for item in run.cookies:
                session_cookie_to_proto(item, session.cookies)

    def RenewLease(self, request: jobs_pb2.RenewLeaseRequest, context: grpc.ServicerContext) -> jobs_pb2.Lease:
        job = self.leases.renew(request.job_id, request.lease_token, request.lease_duration.ToTimedelta())
        lease = jobs_pb2.Lease(job_id=job.id, lease_token=request.lease_token)
        to_timestamp(job.lease_expires_at, lease.expire_time)
        return lease

    def CompleteLeasedJob(self, request: jobs_pb2.CompleteLeasedJobRequest,
                          context: grpc.ServicerContext) -> jobs_pb2.Job:
        return job_to_proto(self.leases.record(completion_input(request)))

    def CompleteLeasedJobs(self, request: jobs_pb2.CompleteLeasedJobsRequest,
                           context: grpc.ServicerContext) -> jobs_pb2.CompleteLeasedJobsResponse:
        if len(request.completions) > MAX_COMPLETIONS_AT_ONCE:
            raise InvalidArgument(Reason.TOO_MANY_COMPLETIONS, f"at most {MAX_COMPLETIONS_AT_ONCE} completions per "
                                  "call", "completions")
        following = request.lease_next if request.HasField("lease_next") else None
        completions: list[Completion | QuaeroError] = []
        for item in request.completions:
            try:
                completions.append(completion_input(item))
            except QuaeroError as refused:  # e.g. a Struct value with no JSON form: this completion only
                completions.append(refused)
        lease_next = None if following is None else LeaseRequest(
            following.worker_id, following.max_jobs, following.lease_duration.ToTimedelta(), following.type)
        outcomes, (leased, token) = self.leases.complete_many(
            [c for c in completions if not isinstance(c, QuaeroError)], lease_next)
        recorded = iter(outcomes)
        response = jobs_pb2.CompleteLeasedJobsResponse()
        for index, completion in enumerate(completions):
            outcome = completion if isinstance(completion, QuaeroError) else next(recorded)
            if isinstance(outcome, QuaeroError):
                field = f"completions[{index}]" + (f".{outcome.field}" if outcome.field else "")
                response.outcomes.add(code=code_number(outcome), reason=outcome.reason,
                                      message=outcome.message, field=field)
            else:
                response.outcomes.add(job=job_to_proto(outcome, basic=True))
        if following is not None:
            self._answer_lease(leased, token, following.known_sessions, response.leased)
        return response

    def ReleaseLeases(self, request: jobs_pb2.ReleaseLeasesRequest,
                      context: grpc.ServicerContext) -> jobs_pb2.ReleaseLeasesResponse:
        return jobs_pb2.ReleaseLeasesResponse(released=self.leases.release(request.worker_id))
