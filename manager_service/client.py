"""A client for the manager's services, used by the executor, the CLI, the tests and the benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

import grpc

from quaero.api.manager.v1 import auth_pb2_grpc, definitions_pb2_grpc, documents_pb2_grpc, jobs_pb2_grpc

from .grpc_common import open_channel


@dataclass
class ManagerClient:
    address: str
    channel: grpc.Channel
    jobs: jobs_pb2_grpc.JobManagerStub
    auth: auth_pb2_grpc.AuthStoreStub
    definitions: definitions_pb2_grpc.JobDefinitionsStub
    documents: documents_pb2_grpc.DocumentsStub

    @classmethod
    def connect(cls, address: str, token: str, default_timeout: float = 10.0) -> ManagerClient:
        channel = open_channel(address, token, default_timeout)
        return cls(address, channel, jobs_pb2_grpc.JobManagerStub(channel), auth_pb2_grpc.AuthStoreStub(channel),
                   definitions_pb2_grpc.JobDefinitionsStub(channel), documents_pb2_grpc.DocumentsStub(channel))

    def close(self) -> None:
        self.channel.close()
