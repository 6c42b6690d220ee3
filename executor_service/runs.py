"""Starting and cancelling runs of job definitions.

The parent's metadata (auth_id, job_definition_id, phase) is persisted with UpdateJobMetadata BEFORE
any child exists, so children find their credentials in the database. If that call fails, the run
goes on: a warning is logged (and written to the job's log when possible), the write is retried in
the background, and children fall back to the job definition's auth_id.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from quaero import run_plan, tracing
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.convert import cookie_from_proto, crawl_mapping_from_proto, definition_mapping_from_proto, dict_to_struct
from quaero.crawl_spec import CrawlSpec, RunPolicy
from quaero.errors import FailedPrecondition, InvalidArgument, Reason

from .page import child_spec

log = logging.getLogger("quaero.executor")
PARENT_TYPE = run_plan.PARENT_TYPE
METADATA_DEADLINE_SECONDS = 5.0
BACKGROUND_RETRY_SECONDS = (2, 4, 8, 16, 30)


@dataclass
class RunStarted:
    parent_job_id: str
    metadata_persisted: bool
    children_created: int


class Runs:
    """Starting and cancelling runs of job definitions (the Executor service's work)."""

    def __init__(self, manager: ManagerClient, children_created: Callable[[], None] = lambda: None) -> None:
        """`children_created`: told when a run's first pages exist (this executor's worker leases them at
        once rather than at its next idle poll, up to half a second later)."""
        self.manager = manager
        self._children_created = children_created
        self._closing = threading.Event()

    def close(self) -> None:
        """Stops background metadata retries (the executor is shutting down)."""
        self._closing.set()

    def start(self, definition_id: str, request_id: str) -> RunStarted:
        if not definition_id:
            raise InvalidArgument(Reason.MISSING_DEFINITION_ID, "definition_id is required", "definition_id")
        definition = self.manager.definitions.GetJobDefinition(
            definitions_pb2.GetJobDefinitionRequest(id=definition_id))
        expired = self._check_credentials(definition.auth_id) if definition.auth_id else ""
        spec = CrawlSpec.from_config(crawl_mapping_from_proto(definition.crawl))
        policy = RunPolicy.from_mapping(definition_mapping_from_proto(definition))
        config = run_plan.run_config(definition.id, spec, policy)
        request = jobs_pb2.CreateJobRequest(type=PARENT_TYPE, name=definition.name or definition.id,
                                            request_id=request_id)
        dict_to_struct(config, request.config)
        parent = self.manager.jobs.CreateJob(request)
        if parent.status != jobs_pb2.JOB_STATUS_PENDING and not self._start_unfinished(parent):
            # A retried request: the first call already started this run.
            return RunStarted(parent.id, "auth_id" in parent.metadata or not definition.auth_id,
                              int(parent.progress_total))
        # (Inside ExecuteJobDefinition's span when tracing is on: the run's trace, which its pages join.)
        metadata = run_plan.run_metadata(definition.id, definition.auth_id, "request", trace=tracing.current_carrier())
        persisted = "auth_id" in parent.metadata or self.persist_metadata(parent.id, metadata)
        if expired:
            # Crawling with a session that has ended would store login pages or nothing: the run ends now.
            self.manager.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
                job_id=parent.id, status=jobs_pb2.JOB_STATUS_FAILED, error=expired, error_reason=Reason.AUTH_EXPIRED))
            log.info("event=execution_refused parent_job_id=%s reason=AUTH_EXPIRED", parent.id)
            return RunStarted(parent.id, persisted, 0)
        try:
            count = self._start_children(parent, spec)
        except grpc.RpcError as error:
            self._fail_start(parent.id, error)
            raise
        log.info("event=execution_started parent_job_id=%s definition_id=%s children=%d metadata_persisted=%s",
                 parent.id, definition.id, count, persisted)
        return RunStarted(parent.id, persisted, count)

    @staticmethod
    def _start_unfinished(parent: jobs_pb2.Job) -> bool:
        """A run whose start was cut short (RUNNING with no children yet): a retry with its request_id
        finishes the start instead of answering with a run that would never end."""
        return parent.status == jobs_pb2.JOB_STATUS_RUNNING and parent.progress_total == 0

    def _start_children(self, parent: jobs_pb2.Job, spec: CrawlSpec) -> int:
        if parent.status == jobs_pb2.JOB_STATUS_PENDING:
            self.manager.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
                job_id=parent.id, status=jobs_pb2.JOB_STATUS_RUNNING))
        starts = run_plan.start_urls(spec)
        created = self.manager.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(
            parent_id=parent.id, children=[child_spec(url, 0) for url in starts], max_children=spec.max_pages))
        count = len(created.jobs)
        if count:
            self._children_created()
        if count == 0 and created.duplicates == 0:
            # Nothing to fetch: a parent without children is complete at once.
            self.manager.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
                job_id=parent.id, status=jobs_pb2.JOB_STATUS_COMPLETED, result=dict_to_struct({"children": 0})))
        return count

    def _fail_start(self, parent_id: str, error: grpc.RpcError) -> None:
        """The first children could not be created: the run ends FAILED with the reason, rather than stay
        RUNNING 0/0. If even that cannot be written, a retry with the same request_id finishes the start."""
        message = f"the run could not start: creating its first pages failed ({error.code().name}: {error.details()})"
        log.warning("event=start_failed parent_job_id=%s code=%s", parent_id, error.code().name)
        try:
            self.manager.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
                job_id=parent_id, status=jobs_pb2.JOB_STATUS_FAILED, error=message, error_reason=Reason.START_FAILED),
                timeout=5)
        except grpc.RpcError as second:
            log.warning("event=start_failure_unrecorded parent_job_id=%s code=%s", parent_id, second.code().name)

    def _check_credentials(self, auth_id: str) -> str:
        """FailedPrecondition when the credentials are gone; why the run cannot be signed in when every
        cookie they hold has expired ('' otherwise)."""
        try:
            stored = self.manager.auth.GetCredentials(auth_pb2.GetCredentialsRequest(id=auth_id))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                return ""  # let the run start; children report an unreachable credential store themselves
            raise FailedPrecondition(Reason.AUTH_NOT_FOUND, f"the definition's auth_id {auth_id!r} names no stored "
                                     "credentials (deleted?); import them again with `quaero auth import`",
                                     "auth_id", {"auth_id": auth_id}) from None
        cookies = [cookie_from_proto(cookie) for cookie in stored.cookies]
        now = datetime.now(UTC)
        if not cookies or not all(cookie.is_expired(now) for cookie in cookies):
            return ""
        last = max(cookie.expires for cookie in cookies if cookie.expires is not None)
        return (f"every cookie of credentials {auth_id!r} has expired (the last at {last:%Y-%m-%d %H:%M} UTC): the "
                f"site's session is over. Sign in to {stored.site_domain} in a browser, export its cookies and run "
                f"`quaero auth import FILE --site {stored.site_domain} --id {auth_id}`, then run the crawl again")

    def persist_metadata(self, parent_id: str, metadata: dict[str, Any]) -> bool:
        """UpdateJobMetadata with a deadline (gRPC retries UNAVAILABLE briefly). Never raises."""
        request = jobs_pb2.UpdateJobMetadataRequest(job_id=parent_id, metadata=dict_to_struct(metadata))
        try:
            self.manager.jobs.UpdateJobMetadata(request, timeout=METADATA_DEADLINE_SECONDS)
            return True
        except grpc.RpcError as error:
            log.warning("event=metadata_persist_failed job_id=%s code=%s error=%r message=\"failed to persist job "
                        "metadata; children will fall back to the job definition\"", parent_id, error.code().name,
                        error.details())
            try:
                self.manager.jobs.AddJobLog(jobs_pb2.AddJobLogRequest(
                    job_id=parent_id, level=jobs_pb2.LOG_LEVEL_WARNING,
                    message=f"failed to persist job metadata ({error.code().name}: {error.details()}); children "
                            "will fall back to the job definition"), timeout=5)
            except grpc.RpcError:
                pass
            threading.Thread(target=self._retry_in_background, args=(request,), daemon=True,
                             name=f"metadata-retry-{parent_id[:8]}").start()
            return False

    def _retry_in_background(self, request: jobs_pb2.UpdateJobMetadataRequest) -> None:
        for pause in BACKGROUND_RETRY_SECONDS:
            if self._closing.wait(pause):
                return
            try:
                self.manager.jobs.UpdateJobMetadata(request, timeout=METADATA_DEADLINE_SECONDS)
            except grpc.RpcError:
                continue
            except ValueError:  # the channel closed under us: shutting down
                return
            log.info("event=metadata_persisted_late job_id=%s", request.job_id)
            return
        log.warning("event=metadata_persist_gave_up job_id=%s", request.job_id)

    def cancel(self, parent_job_id: str) -> tuple[int, int]:
        """(the parent's status after cancelling, as the JobStatus enum value; children cancelled now)."""
        before = self.manager.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_job_id))
        parent = self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_job_id))
        if parent.status in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING):
            try:
                parent = self.manager.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
                    job_id=parent_job_id, status=jobs_pb2.JOB_STATUS_CANCELLED, error="cancelled by request",
                    error_reason=Reason.CANCELLED_BY_USER))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                parent = self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_job_id))
        after = self.manager.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_job_id))
        return parent.status, int(after.cancelled - before.cancelled)
