"""A small health panel: each service's health (gRPC health checking) and how long it took to answer,
the runs going on, and this console's live feeds."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request
from starlette.responses import Response

from quaero.api.manager.v1 import jobs_pb2

from ..views import page
from .common import clients, feeds


@dataclass(frozen=True)
class Probe:
    service: str
    address: str
    status: str
    milliseconds: float


async def probe(name: str, address: str, stub: health_pb2_grpc.HealthStub) -> Probe:
    started = time.perf_counter()
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    except grpc.RpcError as error:
        status = f"unreachable ({error.code().name})"  # type: ignore[attr-defined]
    return Probe(name, address, status, (time.perf_counter() - started) * 1000)


async def health_page(request: Request) -> Response:
    both = clients(request)
    settings = request.app.state.settings
    manager, executor = await asyncio.gather(probe("manager", settings.manager, both.manager_health),
                                             probe("executor", settings.executor, both.executor_health))
    running: list[jobs_pb2.Job] = []
    if manager.status == "SERVING":
        answer = await both.jobs.ListJobs(jobs_pb2.ListJobsRequest(status=jobs_pb2.JOB_STATUS_RUNNING, page_size=100,
                                                                   view=jobs_pb2.JOB_VIEW_BASIC))
        running = list(answer.jobs)
    return page(request, "health.html", probes=[manager, executor], running=running, more=len(running) == 100,
                streams=feeds(request).streams)
