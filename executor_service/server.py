"""Assembles the executor: manager client, fetcher, workers and the Executor gRPC service."""
from __future__ import annotations

import logging
import os

import grpc

from manager_service.client import ManagerClient
from manager_service.config import client_token
from manager_service.grpc_common import build_server, mark_serving, serve_until_signalled
from quaero.api.executor.v1 import executor_pb2_grpc

from .execution import Executions
from .fetcher import Fetcher, parse_resolve
from .servicer import ExecutorServicer
from .transport import GuardedTransport
from .worker import Worker

log = logging.getLogger("quaero.executor")
SERVICE_NAMES = ("quaero.executor.v1.Executor",)


class ExecutorServer:
    def __init__(self, listen: str, manager_address: str, token: str, workers: int = 16,
                 resolve: dict[str, str] | None = None, ca_bundle: str | None = None,
                 lease_seconds: float = 30.0) -> None:
        self.manager = ManagerClient.connect(manager_address, token)
        self.fetcher = Fetcher(GuardedTransport(resolve=resolve, ca_bundle=ca_bundle))
        self.worker = Worker(self.manager, self.fetcher, workers, lease_seconds=lease_seconds)
        self.executions = executions = Executions(self.manager)

        def register(server: grpc.Server) -> tuple[str, ...]:
            executor_pb2_grpc.add_ExecutorServicer_to_server(ExecutorServicer(executions), server)
            return SERVICE_NAMES

        self.server, self.health, self.port = build_server(register, token, listen, workers=8)

    def start(self) -> int:
        self.server.start()
        self.worker.start()
        mark_serving(self.health, SERVICE_NAMES)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.worker.stop()
        self.executions.close()
        self.fetcher.close()
        self.manager.close()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024


def keep_large_buffers_out_of_the_heap() -> None:
    """Page bodies (up to 5 MiB each, one per crawl thread) are allocated with mmap and given back to
    the system when freed. glibc raises its mmap threshold after the first large free, after which
    such buffers come from per-thread heaps that never shrink: measured, 16 threads of 5 MiB pages
    peaked at 320 MiB with the moving threshold and 240 MiB with it fixed. No-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def serve(listen: str, manager_address: str, workers: int, lease_seconds: float = 30.0) -> None:
    keep_large_buffers_out_of_the_heap()
    resolve = parse_resolve(os.environ.get("QUAERO_RESOLVE", ""))
    executor = ExecutorServer(listen, manager_address, client_token(), workers, resolve,
                              os.environ.get("QUAERO_CA_BUNDLE") or None, lease_seconds)
    port = executor.start()
    host = listen.rsplit(":", 1)[0]
    serve_until_signalled(f"quaero-executor serving on {host}:{port} (manager: {manager_address}, workers: {workers})",
                          executor.stop)
