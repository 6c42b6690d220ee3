"""The `quaero` command line: start the services, import cookies, define and run crawls, inspect jobs.

Every error is one readable line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.tree import Tree

from manager_service.client import ManagerClient
from manager_service.config import MissingToken, api_token, client_token, data_dir
from manager_service.convert import add_cookie, struct_to_dict
from manager_service.cookies import canonical_site
from manager_service.grpc_common import error_info, open_channel
from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2

from .cookie_import import CookieFileError, read_cookie_file

app = typer.Typer(help="Quaero: authenticated crawl jobs over gRPC.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
auth_app = typer.Typer(help="Stored site credentials (browser cookies).", no_args_is_help=True)
definitions_app = typer.Typer(help="Crawl job definitions.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: runs (parents) and the pages they fetch (children).", no_args_is_help=True)
docs_app = typer.Typer(help="Crawled documents.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")
app.add_typer(definitions_app, name="definitions")
app.add_typer(jobs_app, name="jobs")
app.add_typer(docs_app, name="docs")

# Piped output is not cut to 80 columns: ids and URLs must survive `| grep` and scripts.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")
STATUS = {v: k.removeprefix("JOB_STATUS_").lower() for k, v in jobs_pb2.JobStatus.items()}
TERMINAL = {jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED}


@dataclass
class Target:
    manager: str
    executor: str
    token: str

    def manager_client(self) -> ManagerClient:
        return ManagerClient.connect(self.manager, self.token)

    def executor_stub(self) -> executor_pb2_grpc.ExecutorStub:
        return executor_pb2_grpc.ExecutorStub(open_channel(self.executor, self.token, default_timeout=30))


_target: Target | None = None


def ID_COLUMN() -> Column:  # noqa: N802 - reads as a constant
    return Column("id", no_wrap=True, min_width=36)


def target() -> Target:
    assert _target is not None
    return _target


class CliError(Exception):
    pass


def fail(message: str) -> None:
    raise CliError(message)


def rpc(call: Callable[[], T], what: str) -> T:
    """Runs a call; a gRPC error becomes one line saying what failed, why, and what to do."""
    try:
        return call()
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            raise CliError(f"{what}: the service is not reachable ({error.details()}); is `quaero up` running?") \
                from None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise CliError(f"{what}: {error.details()}") from None
        reason, field = error_info(error)
        where = f" [{field}]" if field else ""
        raise CliError(f"{what}: {error.details()}{where} ({code.name}{', ' + reason if reason else ''})") from None


@app.callback()
def main(
    manager: Annotated[str, typer.Option(envvar="QUAERO_MANAGER", help="The manager's HOST:PORT.")]
    = "127.0.0.1:50051",
    executor: Annotated[str, typer.Option(envvar="QUAERO_EXECUTOR", help="The executor's HOST:PORT.")]
    = "127.0.0.1:50052",
) -> None:
    """Talks to the services at --manager/--executor with the token from QUAERO_API_TOKEN or the
    api-token file in QUAERO_DATA_DIR (default ./.quaero)."""
    global _target
    _target = Target(manager, executor, "")


def _token() -> str:
    try:
        return client_token()
    except MissingToken as error:
        raise CliError(str(error)) from None


def _client() -> ManagerClient:
    t = target()
    t.token = t.token or _token()
    return t.manager_client()


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds:
        return "-"
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


# ---- up ------------------------------------------------------------------------------------------
@app.command()
def up(
    manager_listen: Annotated[str, typer.Option(help="Where the manager listens.")] = "127.0.0.1:50051",
    executor_listen: Annotated[str, typer.Option(help="Where the executor listens.")] = "127.0.0.1:50052",
    workers: Annotated[int, typer.Option(help="Pages the executor fetches at once.")] = 16,
) -> None:
    """Start the manager (embedded SQLite in QUAERO_DATA_DIR) and the executor; Ctrl-C stops both."""
    services = start_services(manager_listen, executor_listen, workers)
    stopping = threading.Event()
    # SIGTERM (e.g. from a process supervisor) stops both services too, not just this process.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
    out.print(f"manager  {services[0][1]}\nexecutor {services[1][1]}\n"
              f"token    {data_dir() / 'api-token'} (or QUAERO_API_TOKEN)\nPress Ctrl-C to stop.")
    try:
        while all(process.poll() is None for process, _ in services):
            if stopping.wait(0.5):
                return
        fail("a service stopped unexpectedly; see its output above")
    except KeyboardInterrupt:
        pass
    finally:
        stop_services(services)


def start_services(manager_listen: str, executor_listen: str, workers: int, env: dict[str, str] | None = None,
                   log_dir: Path | None = None) -> list[tuple[subprocess.Popen[str], str]]:
    """Starts both services as child processes; returns [(process, address)] once both serve. Their logs
    go to the terminal, or to manager.log and executor.log in log_dir."""
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    api_token()  # create the token file before either service reads it
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        manager = _spawn([sys.executable, "-m", "manager_service", "--listen", manager_listen], environment,
                         log_dir / "manager.log" if log_dir else None)
        started.append(manager)
        executor = _spawn([sys.executable, "-m", "executor_service", "--listen", executor_listen, "--manager",
                           manager[1], "--workers", str(workers)], environment,
                          log_dir / "executor.log" if log_dir else None)
        started.append(executor)
    except CliError:
        stop_services(started)
        raise
    return started


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `quaero up` itself dies (Linux), so no orphan keeps a port."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(command: list[str], env: dict[str, str], log: Path | None) -> tuple[subprocess.Popen[str], str]:
    with open(log, "w") if log else contextlib.nullcontext() as log_file:  # the child keeps its own handle
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                   preexec_fn=_die_with_parent)
    assert process.stdout is not None
    banner = process.stdout.readline().strip()
    if " on " not in banner:
        process.wait(10)
        where = f"see {log}" if log else "see the lines above"
        fail(f"{command[2]} did not start (exit code {process.returncode}); {where}")
    return process, banner.split(" on ", 1)[1].split()[0]


def stop_services(services: list[tuple[subprocess.Popen[str], str]]) -> None:
    for process, _ in reversed(services):
        if process.poll() is None:
            process.terminate()
    for process, _ in services:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


# ---- auth ----------------------------------------------------------------------------------------
@auth_app.command("import")
def auth_import(
    file: Annotated[Path, typer.Argument(help="Chrome/extension cookie JSON, Netscape cookies.txt or a "
                                              "Playwright storageState JSON file.")],
    site: Annotated[str, typer.Option(help="The site the cookies are for, e.g. example.com.")],
    id: Annotated[str, typer.Option("--id", help="Id to store them under (default: the site); replaces "
                                               "existing credentials with that id.")] = "",
    base_url: Annotated[str, typer.Option(help="The site's base URL (default https://SITE/).")] = "",
    user_agent: Annotated[str, typer.Option(help="User-Agent of the browser the cookies came from.")] = "",
) -> None:
    """Store a logged-in browser session's cookies for a site; prints the cookies refused and why."""
    try:
        kind, cookies = read_cookie_file(file)
    except CookieFileError as error:
        fail(str(error))
    if not cookies:
        fail(f"{file}: holds no cookies")
    request = auth_pb2.PutCredentialsRequest(id=id or canonical_site(site), site_domain=site,
                                             base_url=base_url or f"https://{canonical_site(site)}/",
                                             user_agent=user_agent)
    for cookie in cookies:
        add_cookie(request.cookies, cookie)
    # The manager applies the rules (site, public suffixes, prefixes, characters, size) for every client.
    info = rpc(lambda: _client().auth.PutCredentials(request), f"cannot store the cookies of {file}")
    out.print(f"stored {len(info.cookies)} cookies for {info.site_domain} as auth_id [bold]{info.id}[/] "
              f"(read {len(cookies)} from {kind})")
    for rejected in info.rejected_cookies:
        out.print(f"  refused {rejected.name!r}: {rejected.reason}", markup=False)


@auth_app.command("ls")
def auth_ls() -> None:
    """List stored credentials (never their values)."""
    page = rpc(lambda: _client().auth.ListCredentials(auth_pb2.ListCredentialsRequest(page_size=1000)),
               "cannot list credentials")
    table = Table("auth_id", "site", "cookies", "expires first", "updated")
    for info in page.credentials:
        expiries = [c.expire_time.ToDatetime() for c in info.cookies if c.HasField("expire_time")]
        first = min(expiries).strftime("%Y-%m-%d %H:%M") if expiries else "session"
        table.add_row(info.id, info.site_domain, str(len(info.cookies)), first, _when(info.update_time))
    out.print(table)


@auth_app.command("rm")
def auth_rm(auth_id: Annotated[str, typer.Argument(help="The credentials' id.")]) -> None:
    """Delete stored credentials."""
    rpc(lambda: _client().auth.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(id=auth_id)),
        f"cannot delete {auth_id}")
    out.print(f"deleted {auth_id}")


# ---- definitions ---------------------------------------------------------------------------------
def definition_from_toml(path: Path) -> definitions_pb2.JobDefinition:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except tomllib.TOMLDecodeError as error:
        fail(f"{path}: not valid TOML ({error})")
    crawl = data.pop("crawl", {})
    actions = {"stop_all": definitions_pb2.FAILURE_ACTION_STOP_ALL,
               "continue": definitions_pb2.FAILURE_ACTION_CONTINUE}
    action = str(data.pop("failure_action", "continue"))
    if action not in actions:
        fail(f"{path}: failure_action must be stop_all or continue, not {action!r}")
    known = {"id", "name", "type", "auth_id", "max_child_failures"}
    unknown = set(data) - known
    if unknown:
        fail(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known | {'crawl'}))})")
    try:
        message = definitions_pb2.JobDefinition(failure_action=actions[action], **data)
        for key, value in crawl.items():
            field = getattr(message.crawl, key)
            if isinstance(value, list):
                field.extend(value)
            else:
                setattr(message.crawl, key, value)
    except (AttributeError, TypeError, ValueError) as error:
        fail(f"{path}: {error}")
    return message


@definitions_app.command("apply")
def definitions_apply(file: Annotated[Path, typer.Argument(help="A definition in TOML (see README).")]) -> None:
    """Create or replace a job definition from a TOML file."""
    definition = definition_from_toml(file)
    if not definition.id:
        fail(f"{file}: give the definition an id (id = \"my-crawl\")")
    saved = rpc(lambda: _client().definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=definition, allow_missing=True)), f"cannot apply {file}")
    out.print(f"applied definition [bold]{saved.id}[/] ({len(saved.crawl.start_urls)} start URLs, "
              f"auth_id {saved.auth_id or '(none: logged out)'})")


@definitions_app.command("ls")
def definitions_ls() -> None:
    """List job definitions."""
    page = rpc(lambda: _client().definitions.ListJobDefinitions(definitions_pb2.ListJobDefinitionsRequest(
        page_size=1000)), "cannot list definitions")
    table = Table("id", "name", "auth_id", "start URLs", "depth", "pages")
    for d in page.job_definitions:
        table.add_row(d.id, d.name, d.auth_id or "-", "\n".join(d.crawl.start_urls), str(d.crawl.max_depth),
                      str(d.crawl.max_pages))
    out.print(table)


@definitions_app.command("rm")
def definitions_rm(definition_id: Annotated[str, typer.Argument(help="The definition's id.")]) -> None:
    """Delete a job definition."""
    rpc(lambda: _client().definitions.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(
        id=definition_id)), f"cannot delete {definition_id}")
    out.print(f"deleted {definition_id}")


# ---- run -----------------------------------------------------------------------------------------
@app.command()
def run(
    definition: Annotated[str, typer.Argument(help="The id of the definition to run.")],
    wait: Annotated[bool, typer.Option(help="Show progress until the run ends.")] = True,
) -> None:
    """Run a job definition; shows a live progress bar until the parent job is terminal."""
    t = target()
    t.token = t.token or _token()
    started = rpc(lambda: t.executor_stub().ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(
        definition_id=definition, request_id=f"cli-{os.getpid()}-{time.time_ns()}")), f"cannot run {definition}")
    out.print(f"started run {started.parent_job_id} of {definition}")
    if not started.metadata_persisted:
        err.print("warning: the run's metadata could not be saved; children fall back to the definition's auth_id")
    if not wait:
        return
    final = watch_with_progress(started.parent_job_id)
    status = STATUS[final.status]
    summary = f"run {final.id} {status}: {final.progress_current}/{final.progress_total} pages, " \
              f"{final.children_failed} failed"
    if final.status != jobs_pb2.JOB_STATUS_COMPLETED:
        fail(summary + (f" — {final.error}" if final.error else ""))
    out.print(summary)


def watch_with_progress(job_id: str) -> jobs_pb2.Job:
    client = _client()
    last: jobs_pb2.Job | None = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("crawling", total=None)
        for update in _watch(client, job_id):
            last = update
            progress.update(task, completed=update.progress_current, total=max(update.progress_total, 1),
                            description=f"{STATUS[update.status]}")
    assert last is not None
    return last


def _watch(client: ManagerClient, job_id: str) -> Iterator[jobs_pb2.Job]:
    # WatchJob ends when the job is terminal; reconnect if the stream breaks (manager restart).
    while True:
        try:
            for update in client.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id)):
                yield update
                if update.status in TERMINAL:
                    return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise CliError(f"watching the run failed: {error.details()} ({error.code().name})") from None
            time.sleep(1)


# ---- jobs ----------------------------------------------------------------------------------------
@jobs_app.command("ls")
def jobs_ls(
    status: Annotated[str, typer.Option(help="Only jobs in this status (pending, running, completed, ...).")] = "",
    parent: Annotated[str, typer.Option(help="Only children of this job.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List runs (top-level jobs), newest first, or the children of --parent."""
    wanted = {v: k for k, v in STATUS.items()}
    if status and status not in wanted:
        fail(f"unknown status {status!r}; use one of {', '.join(s for s in wanted if s != 'unspecified')}")
    status_value = wanted[status] if status else jobs_pb2.JOB_STATUS_UNSPECIFIED
    page = rpc(lambda: _client().jobs.ListJobs(jobs_pb2.ListJobsRequest(
        parent_id=parent, status=status_value, page_size=limit)), "cannot list jobs")
    table = Table(ID_COLUMN(), "type", "name", "status", "progress", "created")
    for job in page.jobs:
        table.add_row(job.id, job.type, job.name[:60], STATUS[job.status],
                      f"{job.progress_current}/{job.progress_total}", _when(job.create_time))
    out.print(table)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Show one job: status, progress, metadata, config, result and error."""
    job = rpc(lambda: _client().jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)), f"cannot show {job_id}")
    out.print(f"[bold]{job.id}[/] {job.type} {job.name!r}\nstatus   {STATUS[job.status]}"
              f"{' (' + job.error_reason + ')' if job.error_reason else ''}\n"
              f"parent   {job.parent_id or '-'}\nprogress {job.progress_current}/{job.progress_total} "
              f"({job.children_failed} failed)\ncreated  {_when(job.create_time)}  started {_when(job.start_time)}  "
              f"finished {_when(job.finish_time)}\netag     {job.etag}")
    if job.parent_id:
        retry = f"  next attempt not before {_when(job.schedule_time)}" if job.HasField("schedule_time") else ""
        out.print(f"attempts {job.attempts}{retry}")
    for name in ("metadata", "config", "result"):
        out.print(f"{name:8} {struct_to_dict(getattr(job, name))}")
    if job.error:
        out.print(f"error    {job.error}")


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    children: Annotated[bool, typer.Option(help="Include the logs of its children.")] = False,
) -> None:
    """Print a job's log, oldest first."""
    client = _client()
    token = ""
    levels = {v: k.removeprefix("LOG_LEVEL_").lower() for k, v in jobs_pb2.LogLevel.items()}
    while True:
        page = rpc(lambda t=token: client.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(  # type: ignore[misc]
            job_id=job_id, page_size=1000, page_token=t, include_children=children)), f"cannot read logs of {job_id}")
        for entry in page.logs:
            out.print(f"{_when(entry.create_time)} {levels[entry.level]:7} {entry.job_id[:8]} {entry.message}",
                      markup=False)
        token = page.next_page_token
        if not token:
            return


@jobs_app.command("tree")
def jobs_tree(job_id: Annotated[str, typer.Argument(help="The parent job's id.")]) -> None:
    """Show a run and its children with their statuses."""
    client = _client()
    job = rpc(lambda: client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)), f"cannot show {job_id}")
    tree = Tree(f"[bold]{job.name}[/] {STATUS[job.status]} {job.progress_current}/{job.progress_total}")
    token = ""
    while True:
        page = rpc(lambda t=token: client.jobs.ListJobs(jobs_pb2.ListJobsRequest(  # type: ignore[misc]
            parent_id=job_id, page_size=1000, page_token=t)), "cannot list children")
        for child in sorted(page.jobs, key=lambda c: (c.depth, c.name)):
            reason = f" ({child.error_reason})" if child.error_reason else ""
            tree.add(f"{'  ' * child.depth}{child.name} [dim]{STATUS[child.status]}{reason}[/]")
        token = page.next_page_token
        if not token:
            break
    out.print(tree)


# ---- docs ----------------------------------------------------------------------------------------
@docs_app.command("ls")
def docs_ls(
    job: Annotated[str, typer.Option(help="Only documents of this run (parent job id).")] = "",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List crawled documents, newest first."""
    page = rpc(lambda: _client().documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=job, page_size=limit, omit_text=True)), "cannot list documents")
    table = Table(ID_COLUMN(), "url", "title", "status", "fetched")
    for d in page.documents:
        table.add_row(d.id, d.url, d.title[:50], str(d.status_code), _when(d.fetch_time))
    out.print(table)


@docs_app.command("show")
def docs_show(key: Annotated[str, typer.Argument(help="A document id or URL.")]) -> None:
    """Show one document with its text."""
    is_url = "://" in key
    request = documents_pb2.GetDocumentRequest(url=key) if is_url else documents_pb2.GetDocumentRequest(document_id=key)
    d = rpc(lambda: _client().documents.GetDocument(request), f"cannot show {key}")
    out.print(f"[bold]{d.title}[/]\n{d.url} -> {d.final_url} ({d.status_code}, {d.content_type})\n"
              f"fetched {_when(d.fetch_time)} by job {d.job_id}\n")
    out.print(d.text, markup=False)


def run_cli(argv: list[str] | None = None) -> int:
    """Entry point: usage errors as click shows them, every other failure as one line."""
    try:
        result = app(args=argv, standalone_mode=False)
    except CliError as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as error:
        show, exit_code = getattr(error, "show", None), getattr(error, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):  # a usage error (missing argument, bad option)
            show()
            return exit_code
        err.print(f"error: {type(error).__name__}: {error}", markup=False)
        return 1
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(run_cli())


if __name__ == "__main__":
    entry()
