"""Definitions: the list with schedules and next fire times, one definition as TOML with its recent
runs, run now, pause and resume."""
from __future__ import annotations

import asyncio
import uuid

from starlette.requests import Request
from starlette.responses import Response

from quaero.api.executor.v1 import executor_pb2
from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.convert import definition_to_toml

from ..guard import state_changing
from ..views import page
from .common import PAGE_SIZE, after_post, clients, form_text, param


async def definitions_list(request: Request) -> Response:
    answer = await clients(request).definitions.ListJobDefinitions(definitions_pb2.ListJobDefinitionsRequest(
        page_size=PAGE_SIZE, page_token=param(request, "page", 2000)))
    return page(request, "definitions.html", definitions=answer.job_definitions, next_page=answer.next_page_token)


async def definition_page(request: Request) -> Response:
    definition_id = request.path_params["definition_id"]
    definition, runs = await asyncio.gather(
        clients(request).definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition_id)),
        clients(request).jobs.ListJobs(jobs_pb2.ListJobsRequest(definition_id=definition_id, page_size=10)))
    # A fresh request id per page view: a double click or a resent form starts one run, not two.
    return page(request, "definition.html", definition=definition, toml=definition_to_toml(definition),
                runs=runs.jobs, request_id=str(uuid.uuid4()))


@state_changing
async def definition_run(request: Request) -> Response:
    definition_id = request.path_params["definition_id"]
    started = await clients(request).executor.ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(
        definition_id=definition_id, request_id=form_text(request, "request_id", 100)))
    return after_post(f"/runs/{started.parent_job_id}")


async def _set_paused(request: Request, paused: bool) -> Response:
    definition_id = request.path_params["definition_id"]
    stub = clients(request).definitions
    stored = await stub.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition_id))
    if not stored.HasField("schedule"):
        return page(request, "error.html", 409, title="No schedule",
                    message=f"{definition_id} has no schedule to pause or resume (add schedule = \"<cron>\" to "
                            "its TOML).")
    stored.schedule.paused = paused
    # With the etag read above: a change made meanwhile is refused (ABORTED), not overwritten.
    await stub.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(job_definition=stored))
    return after_post(f"/definitions/{definition_id}")


@state_changing
async def definition_pause(request: Request) -> Response:
    return await _set_paused(request, True)


@state_changing
async def definition_resume(request: Request) -> Response:
    return await _set_paused(request, False)
