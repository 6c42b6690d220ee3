"""A run started on an executor and followed to its end through WatchJob (the benchmarks' stopwatch)."""
from __future__ import annotations

import grpc

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.convert import job_status


def run_to_end(executor: grpc.Channel, manager: ManagerClient, definition_id: str) -> jobs_pb2.Job:
    """Starts `definition_id` and returns its parent job as it ended."""
    started = executor_pb2_grpc.ExecutorStub(executor).ExecuteJobDefinition(
        executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition_id))
    for update in manager.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=started.parent_job_id)):
        if job_status(update.status).terminal:
            return update
    return manager.get_job(started.parent_job_id)
