"""Runs: the list (filters, keyset pages), one run live (counts, progress and log tail by server-sent
events), its children by status and reason, its documents by kind, and cancelling it."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from quaero.api.executor.v1 import executor_pb2
from quaero.api.manager.v1 import documents_pb2, jobs_pb2
from quaero.convert import DOCUMENT_KINDS, job_status_to_proto
from quaero.job_status import JobStatus

from ..feeds import read_run
from ..guard import state_changing
from ..views import page, render
from .common import PAGE_SIZE, after_post, clients, feeds, param

STATUSES = [status.value for status in JobStatus]


def _status(request: Request) -> jobs_pb2.JobStatus.ValueType:
    value = param(request, "status")
    return job_status_to_proto(value) if value in STATUSES else jobs_pb2.JOB_STATUS_UNSPECIFIED


async def runs_list(request: Request) -> Response:
    definition = param(request, "definition")
    answer = await clients(request).jobs.ListJobs(jobs_pb2.ListJobsRequest(
        status=_status(request), definition_id=definition, page_size=PAGE_SIZE,
        page_token=param(request, "page", 2000)))  # FULL view: a run's metadata says who started it
    return page(request, "runs.html", runs=answer.jobs, next_page=answer.next_page_token, statuses=STATUSES,
                status=param(request, "status"), definition=definition)


async def _children(request: Request, run_id: str) -> dict[str, Any]:
    reason = param(request, "reason", 64)
    answer = await clients(request).jobs.ListJobs(jobs_pb2.ListJobsRequest(
        parent_id=run_id, status=_status(request), error_reason=reason, page_size=PAGE_SIZE,
        page_token=param(request, "page", 2000), view=jobs_pb2.JOB_VIEW_BASIC))
    return {"children": answer.jobs, "next_page": answer.next_page_token, "statuses": STATUSES,
            "status": param(request, "status"), "reason": reason}


async def run_page(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    (run, stats, logs), children = await asyncio.gather(read_run(clients(request).jobs, run_id),
                                                        _children(request, run_id))
    return page(request, "run.html", run=run, stats=stats, logs=logs, problem="", **children)


async def run_children(request: Request) -> Response:
    """The children table alone (htmx swaps it in when a filter changes or a page turns)."""
    run_id = request.path_params["run_id"]
    if "hx-request" not in request.headers:  # a plain link: the whole page with the filter applied
        return await run_page(request)
    return page(request, "_children.html", run_id=run_id, **await _children(request, run_id))


async def run_events(request: Request) -> Response:
    """Server-sent events: 'live' (counts, progress) and 'logs' (the tail) at most twice a second, and
    'done' once the run is over (the page then stops listening)."""
    run_id = request.path_params["run_id"]
    await clients(request).jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run_id))  # NOT_FOUND before the stream

    async def stream() -> AsyncIterator[str]:
        async for snapshot in feeds(request).follow(run_id):
            yield event("live", render("_run_live.html", run=snapshot.job, stats=snapshot.stats,
                                       problem=snapshot.problem))
            yield event("logs", render("_logs.html", logs=snapshot.logs))
            if snapshot.final:
                yield event("done", "")

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


def event(name: str, html: str) -> str:
    """One server-sent event: every line of the data gets its own 'data:' (a line break ends a field)."""
    lines = html.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


@state_changing
async def run_cancel(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    await clients(request).executor.CancelExecution(executor_pb2.CancelExecutionRequest(parent_job_id=run_id))
    return after_post(f"/runs/{run_id}")


async def run_documents(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    kind = param(request, "kind")
    kinds = [DOCUMENT_KINDS[kind]] if kind in DOCUMENT_KINDS else []
    run, answer = await asyncio.gather(
        clients(request).jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run_id)),
        clients(request).documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=run_id, kinds=kinds, omit_text=True, page_size=PAGE_SIZE,
            page_token=param(request, "page", 2000))))
    return page(request, "run_documents.html", run=run, documents=answer.documents, next_page=answer.next_page_token,
                kind=kind if kinds else "", kinds=list(DOCUMENT_KINDS))
