"""`quaero run` and `quaero jobs ls|show|logs|tree`: runs (parent jobs) and the pages they fetch."""
from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from ..api.executor.v1 import executor_pb2
from ..api.manager.v1 import jobs_pb2
from ..client import ManagerClient
from ..convert import job_status_to_proto, status_label, struct_to_dict
from ..job_status import JobStatus
from .common import describing, err, fail, id_column, manager, out, rpc, target, when

DELETE_TIMEOUT_SECONDS = 3600.0
app = typer.Typer(help="Jobs: runs (parents) and the pages they fetch (children).", no_args_is_help=True)


def run(
    ctx: typer.Context,
    definition: Annotated[str, typer.Argument(help="The id of the definition to run.")],
    wait: Annotated[bool, typer.Option(help="Show progress until the run ends.")] = True,
) -> None:
    """Run a job definition; shows a live progress bar until the parent job is terminal."""
    executor = target(ctx).executor_client().executor
    started = rpc(lambda: executor.ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(
        definition_id=definition, request_id=f"cli-{os.getpid()}-{time.time_ns()}")), f"cannot run {definition}")
    out.print(f"started run {started.parent_job_id} of {definition}")
    if not started.metadata_persisted:
        err.print("warning: the run's metadata could not be saved; children fall back to the definition's auth_id")
    if not wait:
        return
    final = watch_with_progress(manager(ctx), started.parent_job_id)
    summary = f"run {final.id} {status_label(final.status)}: {final.progress_current}/{final.progress_total} " \
              f"pages, {final.children_failed} failed"
    if final.status != jobs_pb2.JOB_STATUS_COMPLETED:
        fail(summary + (f" — {final.error}" if final.error else ""))
    out.print(summary)


def watch_with_progress(client: ManagerClient, job_id: str) -> jobs_pb2.Job:
    last: jobs_pb2.Job | None = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("crawling", total=None)
        with describing("watching the run failed"):
            for update in client.watch(job_id):
                last = update
                progress.update(task, completed=update.progress_current, total=max(update.progress_total, 1),
                                description=status_label(update.status))
    assert last is not None
    return last


@app.command("ls")
def jobs_ls(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="Only jobs in this status (pending, running, completed, ...).")] = "",
    parent: Annotated[str, typer.Option(help="Only children of this job.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List runs (top-level jobs), newest first, or the children of --parent."""
    if status and status not in tuple(JobStatus):
        fail(f"unknown status {status!r}; use one of {', '.join(JobStatus)}")
    status_value = job_status_to_proto(status) if status else jobs_pb2.JOB_STATUS_UNSPECIFIED
    page = rpc(lambda: manager(ctx).jobs.ListJobs(jobs_pb2.ListJobsRequest(
        parent_id=parent, status=status_value, page_size=limit)), "cannot list jobs")
    table = Table(id_column(), "type", "name", "status", "progress", "started by", "created")
    for job in page.jobs:
        started_by = struct_to_dict(job.metadata).get("started_by", "-") if not job.parent_id else "-"
        table.add_row(job.id, job.type, job.name[:60], status_label(job.status),
                      f"{job.progress_current}/{job.progress_total}", str(started_by), when(job.create_time))
    out.print(table)


@app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Show one job: status, progress, metadata, config, result and error."""
    job = rpc(lambda: manager(ctx).get_job(job_id), f"cannot show {job_id}")
    out.print(f"[bold]{job.id}[/] {job.type} {job.name!r}\nstatus   {status_label(job.status)}"
              f"{' (' + job.error_reason + ')' if job.error_reason else ''}\n"
              f"parent   {job.parent_id or '-'}\nprogress {job.progress_current}/{job.progress_total} "
              f"({job.children_failed} failed)\ncreated  {when(job.create_time)}  started {when(job.start_time)}  "
              f"finished {when(job.finish_time)}\netag     {job.etag}")
    if not job.parent_id and job.definition_id:
        counts = job.documents
        out.print(f"pages    {counts.new} new, {counts.changed} changed, {counts.unchanged} unchanged, {counts.gone} "
                  f"gone (definition {job.definition_id})", markup=False)
    if job.parent_id:
        retry = f"  next attempt not before {when(job.schedule_time)}" if job.HasField("schedule_time") else ""
        out.print(f"attempts {job.attempts}{retry}")
    for name in ("metadata", "config", "result"):
        out.print(f"{name:8} {struct_to_dict(getattr(job, name))}", markup=False)
    if job.error:
        out.print(f"error    {job.error}", markup=False)


@app.command("rm")
def jobs_rm(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The run (top-level job) to delete.")],
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel it first if it is still going.")] = False,
) -> None:
    """Delete a run: its pages, logs and the documents no other run refers to."""
    # (A big run goes in paced batches: 100,000 rows take about half a minute.)
    deleted = rpc(lambda: manager(ctx).jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=job_id, cancel=cancel),
                                                      timeout=DELETE_TIMEOUT_SECONDS), f"cannot delete {job_id}")
    out.print(f"deleted run {job_id}: {deleted.jobs_deleted} jobs, {deleted.logs_deleted} log lines, "
              f"{deleted.documents_deleted} documents, {deleted.contents_deleted} stored contents", markup=False)


@app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    children: Annotated[bool, typer.Option(help="Include the logs of its children.")] = False,
) -> None:
    """Print a job's log, oldest first."""
    client = manager(ctx)
    token = ""
    levels = {v: k.removeprefix("LOG_LEVEL_").lower() for k, v in jobs_pb2.LogLevel.items()}
    while True:
        page = rpc(lambda t=token: client.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(  # type: ignore[misc]
            job_id=job_id, page_size=1000, page_token=t, include_children=children)), f"cannot read logs of {job_id}")
        for entry in page.logs:
            out.print(f"{when(entry.create_time)} {levels[entry.level]:7} {entry.job_id[:8]} {entry.message}",
                      markup=False)
        token = page.next_page_token
        if not token:
            return


@app.command("tree")
def jobs_tree(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="The parent job's id.")]) -> None:
    """Show a run and its children with their statuses."""
    client = manager(ctx)
    job = rpc(lambda: client.get_job(job_id), f"cannot show {job_id}")
    tree = Tree(f"[bold]{job.name}[/] {status_label(job.status)} {job.progress_current}/{job.progress_total}")
    children = rpc(lambda: list(client.iter_children(job_id)), "cannot list children")
    for child in sorted(children, key=lambda c: (c.depth, c.name)):
        reason = f" ({child.error_reason})" if child.error_reason else ""
        tree.add(f"{'  ' * child.depth}{child.name} [dim]{status_label(child.status)}{reason}[/]")
    out.print(tree)
