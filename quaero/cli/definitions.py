"""`quaero definitions apply|ls|show|pause|resume|rm`: crawl job definitions, written in TOML."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..api.manager.v1 import definitions_pb2
from ..convert import crawl_mapping_from_proto, definition_mapping_from_proto, definition_to_proto
from ..crawl_spec import Definition
from ..errors import QuaeroError
from .common import fail, manager, out, rpc, when

app = typer.Typer(help="Crawl job definitions.", no_args_is_help=True)


def definition_from_toml(path: Path) -> definitions_pb2.JobDefinition:
    """The file checked as the manager checks it (quaero.crawl_spec), so a mistake is named at once."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        fail(f"{path}: not valid TOML ({error})")
    known = {"id", "name", "type", "auth_id", "max_child_failures", "failure_action", "keep_runs", "keep_days", "crawl",
             "schedule", *SCHEDULE_KEYS}
    unknown = set(data) - known
    if unknown:
        fail(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    if not data.get("id"):
        fail(f"{path}: give the definition an id (id = \"my-crawl\")")
    data = schedule_from_top_level(data, path)
    try:
        return definition_to_proto(Definition.from_mapping(data))
    except QuaeroError as error:
        fail(f"{path}: {error.message} [{error.field}] ({error.code_name}, {error.reason})")
    raise AssertionError("unreachable")


SCHEDULE_KEYS = ("timezone", "jitter", "overlap", "catchup_window", "paused")


def schedule_from_top_level(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`schedule = "0 2 * * *"` with timezone, jitter, overlap, catchup_window and paused beside it (or a
    [schedule] table holding cron and those keys): the schedule as the API takes it."""
    beside = {key: data.pop(key) for key in SCHEDULE_KEYS if key in data}
    schedule = data.get("schedule")
    if isinstance(schedule, str):
        data["schedule"] = {"cron": schedule, **beside}
    elif beside:
        fail(f"{path}: {', '.join(sorted(beside))} belong to a schedule: add schedule = \"<cron>\" (e.g. "
             "\"0 2 * * *\")")
    return data


@app.command("apply")
def definitions_apply(ctx: typer.Context,
                      file: Annotated[Path, typer.Argument(help="A definition in TOML (see README).")]) -> None:
    """Create or replace a job definition from a TOML file."""
    definition = definition_from_toml(file)
    saved = rpc(lambda: manager(ctx).definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=definition, allow_missing=True)), f"cannot apply {file}")
    out.print(f"applied definition [bold]{saved.id}[/] ({len(saved.crawl.start_urls)} start URLs, "
              f"auth_id {saved.auth_id or '(none: logged out)'})")


@app.command("ls")
def definitions_ls(ctx: typer.Context) -> None:
    """List job definitions."""
    page = rpc(lambda: manager(ctx).definitions.ListJobDefinitions(definitions_pb2.ListJobDefinitionsRequest(
        page_size=1000)), "cannot list definitions")
    table = Table("id", "name", "auth_id", "start URLs", "depth", "pages", "render", "schedule", "next run")
    for d in page.job_definitions:
        table.add_row(d.id, d.name, d.auth_id or "-", "\n".join(d.crawl.start_urls), str(d.crawl.max_depth),
                      str(d.crawl.max_pages), crawl_mapping_from_proto(d.crawl)["render"], schedule_text(d),
                      when(d.next_fire_times[0]) if d.next_fire_times else "-")
    out.print(table)


def schedule_text(d: definitions_pb2.JobDefinition) -> str:
    if not d.HasField("schedule"):
        return "-"
    text = f"{d.schedule.cron} ({d.schedule.timezone or 'UTC'})"
    return text + " paused" if d.schedule.paused else text


@app.command("show")
def definitions_show(ctx: typer.Context,
                     definition_id: Annotated[str, typer.Argument(help="The definition's id.")]) -> None:
    """Show one job definition: what it crawls, with which credentials, its schedule and next runs."""
    d = rpc(lambda: manager(ctx).definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(
        id=definition_id)), f"cannot show {definition_id}")
    mapping = definition_mapping_from_proto(d)
    out.print(f"{d.id} {d.name!r}\nauth_id   {d.auth_id or '(none: logged out)'}\nretention keep_runs "
              f"{d.keep_runs or 'default'}, keep_days {d.keep_days or '-'}", markup=False)
    out.print(f"schedule  {schedule_text(d)}", markup=False)
    if d.HasField("schedule"):
        schedule = mapping["schedule"]
        out.print(f"          overlap {schedule['overlap']}, jitter {d.schedule.jitter.ToTimedelta()}, catchup_window "
                  f"{d.schedule.catchup_window.ToTimedelta()}", markup=False)
        for moment in d.next_fire_times:
            out.print(f"next run  {when(moment)}", markup=False)
    out.print(f"crawl     {mapping['crawl']}", markup=False)


def set_paused(ctx: typer.Context, definition_id: str, paused: bool) -> None:
    client = manager(ctx)
    what = "pause" if paused else "resume"
    stored = rpc(lambda: client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(
        id=definition_id)), f"cannot {what} {definition_id}")
    if not stored.HasField("schedule"):
        fail(f"cannot {what} {definition_id}: it has no schedule (add schedule = \"<cron>\" to its TOML)")
    stored.schedule.paused = paused
    saved = rpc(lambda: client.definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=stored)), f"cannot {what} {definition_id}")
    following = f"; next run {when(saved.next_fire_times[0])}" if saved.next_fire_times else ""
    out.print(f"{'paused' if paused else 'resumed'} the schedule of {definition_id}{following}", markup=False)


@app.command("pause")
def definitions_pause(ctx: typer.Context, definition_id: Annotated[str, typer.Argument(help="The definition's id.")]
                      ) -> None:
    """Pause a definition's schedule: its ticks pass without runs (and are not caught up later)."""
    set_paused(ctx, definition_id, True)


@app.command("resume")
def definitions_resume(ctx: typer.Context, definition_id: Annotated[str, typer.Argument(help="The definition's id.")]
                       ) -> None:
    """Resume a definition's paused schedule from its next tick."""
    set_paused(ctx, definition_id, False)


@app.command("rm")
def definitions_rm(ctx: typer.Context,
                   definition_id: Annotated[str, typer.Argument(help="The definition's id.")]) -> None:
    """Delete a job definition."""
    rpc(lambda: manager(ctx).definitions.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(
        id=definition_id)), f"cannot delete {definition_id}")
    out.print(f"deleted {definition_id}")
