"""Assembles the executor: manager client, fetcher, workers, runs and the Executor gRPC service."""
from __future__ import annotations

import logging
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2

from quaero.api.executor.v1 import executor_pb2_grpc
from quaero.client import ManagerClient
from quaero.config import ensure_data_dir
from quaero.cookies.rules import load_public_suffixes_in_background
from quaero.metrics import serve_metrics
from quaero.rpc.interceptors import ExceptionToStatus
from quaero.rpc.pool import WorkerPool
from quaero.rpc.roles import Role
from quaero.rpc.server import banner, build_server, serve_until_signalled

from .config import ExecutorSettings
from .crawl.fetcher import Fetcher
from .crawl.transport import GuardedTransport
from .identity import claim_identity
from .manager_link import ManagerLink
from .metrics import MANAGER_REACHABLE, PAGES_IN_FLIGHT
from .render.browser import Renderer
from .runs import Runs
from .servicer import ExecutorServicer, relayed_from_manager
from .worker import Worker

log = logging.getLogger("quaero.executor")
SERVICE_NAMES = ("quaero.executor.v1.Executor",)
RPC_WORKERS = 8
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024


class ExecutorServer:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.manager = ManagerClient.connect(settings.manager, settings.manager_token, tls_ca=settings.manager_tls_ca)
        self.fetcher = Fetcher(GuardedTransport(resolve=settings.resolve, ca_bundle=settings.ca_bundle))
        self.worker = Worker(self.manager, self.fetcher, settings.workers, worker_id=settings.worker_id or None,
                             lease_seconds=settings.lease_seconds,
                             renderer=Renderer(self.fetcher, settings.browser_pages, settings.browser_recycle_after))
        self.link = ManagerLink(self.manager, self._manager_reachable)
        PAGES_IN_FLIGHT.set_function(lambda: self.worker.in_flight)
        self.runs = runs = Runs(self.manager, children_created=self.worker.wake)

        def register(server: grpc.Server) -> tuple[str, ...]:
            executor_pb2_grpc.add_ExecutorServicer_to_server(ExecutorServicer(runs), server)
            return SERVICE_NAMES

        self.service = build_server(register, tokens={settings.token: Role.OPERATOR}, listen=settings.listen,
                                    pool=WorkerPool(RPC_WORKERS),
                                    errors=ExceptionToStatus(relay=relayed_from_manager), tls=settings.tls,
                                    faults=settings.faults)
        self.port = self.service.port

    def start(self) -> int:
        load_public_suffixes_in_background()
        self.service.start()
        self.worker.start()
        self.service.health.set("", health_pb2.HealthCheckResponse.SERVING)  # liveness
        self.link.start()  # the Executor service's own status follows the manager
        return self.port

    def _manager_reachable(self, reachable: bool) -> None:
        MANAGER_REACHABLE.set(1 if reachable else 0)
        status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in SERVICE_NAMES:
            self.service.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        self.link.stop()
        self.service.stop(grace)
        self.worker.stop()
        self.runs.close()
        self.fetcher.close()
        self.manager.close()


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


def serve(settings: ExecutorSettings, metrics_listen: str = "") -> None:
    keep_large_buffers_out_of_the_heap()
    identity = claim_identity(ensure_data_dir(), settings.worker_id)
    settings = replace(settings, worker_id=identity.worker_id)
    executor = ExecutorServer(settings)
    port = executor.start()
    details = f"manager: {settings.manager}, workers: {settings.workers}"
    if metrics_listen:
        details += f", metrics: http://{metrics_listen.rsplit(':', 1)[0]}:{serve_metrics(metrics_listen)}/metrics"
    serve_until_signalled(banner("quaero-executor", settings.listen, port, details), executor.stop,
                          executor.service.running)
