"""Clients for the two services, used by the executor, the CLI, the tests and the benchmarks: the raw
stubs (client.jobs, client.auth, ...) on one channel, and the few helpers several callers need."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc

from quaero.api.executor.v1 import executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2_grpc, definitions_pb2_grpc, documents_pb2_grpc, jobs_pb2, jobs_pb2_grpc

from .convert import job_status
from .rpc.channel import open_aio_channel, open_channel


@dataclass
class ManagerClient:
    address: str
    channel: grpc.Channel
    jobs: jobs_pb2_grpc.JobManagerStub
    auth: auth_pb2_grpc.AuthStoreStub
    definitions: definitions_pb2_grpc.JobDefinitionsStub
    documents: documents_pb2_grpc.DocumentsStub

    @classmethod
    def connect(cls, address: str, token: str, default_timeout: float = 10.0,
                tls_ca: Path | None = None) -> ManagerClient:
        channel = open_channel(address, token, default_timeout, tls_ca)
        return cls(address, channel, jobs_pb2_grpc.JobManagerStub(channel), auth_pb2_grpc.AuthStoreStub(channel),
                   definitions_pb2_grpc.JobDefinitionsStub(channel), documents_pb2_grpc.DocumentsStub(channel))

    def get_job(self, job_id: str, timeout: float | None = None) -> jobs_pb2.Job:
        return self.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=timeout)

    def iter_children(self, parent_id: str, page_size: int = 1000) -> Iterator[jobs_pb2.Job]:
        token = ""
        while True:
            page = self.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent_id, page_size=page_size,
                                                               page_token=token))
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def watch(self, job_id: str) -> Iterator[jobs_pb2.Job]:
        """WatchJob until the job is terminal, reconnecting when the stream breaks (a manager restart)."""
        while True:
            try:
                for update in self.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id)):
                    yield update
                    if job_status(update.status).terminal:
                        return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise
                time.sleep(1)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class ExecutorClient:
    address: str
    channel: grpc.Channel
    executor: executor_pb2_grpc.ExecutorStub

    @classmethod
    def connect(cls, address: str, token: str, default_timeout: float = 30.0,
                tls_ca: Path | None = None) -> ExecutorClient:
        channel = open_channel(address, token, default_timeout, tls_ca)
        return cls(address, channel, executor_pb2_grpc.ExecutorStub(channel))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class AsyncClients:
    """Both services for an asyncio application (the console): grpc.aio stubs on one channel per service,
    with the token, default deadlines and retries of the blocking clients."""
    manager_channel: grpc.aio.Channel
    executor_channel: grpc.aio.Channel
    jobs: jobs_pb2_grpc.JobManagerStub
    auth: auth_pb2_grpc.AuthStoreStub
    definitions: definitions_pb2_grpc.JobDefinitionsStub
    documents: documents_pb2_grpc.DocumentsStub
    executor: executor_pb2_grpc.ExecutorStub
    manager_health: health_pb2_grpc.HealthStub
    executor_health: health_pb2_grpc.HealthStub

    @classmethod
    def connect(cls, manager: str, executor: str, token: str, default_timeout: float = 10.0,
                tls_ca: Path | None = None) -> AsyncClients:
        to_manager = open_aio_channel(manager, token, default_timeout, tls_ca)
        to_executor = open_aio_channel(executor, token, default_timeout, tls_ca)
        return cls(to_manager, to_executor, jobs_pb2_grpc.JobManagerStub(to_manager),
                   auth_pb2_grpc.AuthStoreStub(to_manager), definitions_pb2_grpc.JobDefinitionsStub(to_manager),
                   documents_pb2_grpc.DocumentsStub(to_manager), executor_pb2_grpc.ExecutorStub(to_executor),
                   health_pb2_grpc.HealthStub(to_manager), health_pb2_grpc.HealthStub(to_executor))

    async def close(self) -> None:
        await self.manager_channel.close()
        await self.executor_channel.close()
