"""`quaero definitions apply|ls|rm`: crawl job definitions, written in TOML."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..api.manager.v1 import definitions_pb2
from ..convert import crawl_mapping_from_proto, definition_to_proto
from ..crawl_spec import Definition
from ..errors import QuaeroError
from .common import fail, manager, out, rpc

app = typer.Typer(help="Crawl job definitions.", no_args_is_help=True)


def definition_from_toml(path: Path) -> definitions_pb2.JobDefinition:
    """The file checked as the manager checks it (quaero.crawl_spec), so a mistake is named at once."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        fail(f"{path}: not valid TOML ({error})")
    known = {"id", "name", "type", "auth_id", "max_child_failures", "failure_action", "keep_runs", "keep_days", "crawl"}
    unknown = set(data) - known
    if unknown:
        fail(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    if not data.get("id"):
        fail(f"{path}: give the definition an id (id = \"my-crawl\")")
    try:
        return definition_to_proto(Definition.from_mapping(data))
    except QuaeroError as error:
        fail(f"{path}: {error.message} [{error.field}] ({error.code_name}, {error.reason})")
    raise AssertionError("unreachable")


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
    table = Table("id", "name", "auth_id", "start URLs", "depth", "pages", "render")
    for d in page.job_definitions:
        table.add_row(d.id, d.name, d.auth_id or "-", "\n".join(d.crawl.start_urls), str(d.crawl.max_depth),
                      str(d.crawl.max_pages), crawl_mapping_from_proto(d.crawl)["render"])
    out.print(table)


@app.command("rm")
def definitions_rm(ctx: typer.Context,
                   definition_id: Annotated[str, typer.Argument(help="The definition's id.")]) -> None:
    """Delete a job definition."""
    rpc(lambda: manager(ctx).definitions.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(
        id=definition_id)), f"cannot delete {definition_id}")
    out.print(f"deleted {definition_id}")
