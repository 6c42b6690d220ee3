"""The `quaero` command line: start the services, import cookies, define and run crawls, inspect jobs.

Every error is one readable line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..config import DEFAULT_EXECUTOR, DEFAULT_MANAGER
from . import auth, definitions, docs, jobs
from .common import CliError, Target, err
from .console import console
from .up import up

app = typer.Typer(help="Quaero: authenticated crawl jobs over gRPC.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(auth.app, name="auth")
app.add_typer(definitions.app, name="definitions")
app.add_typer(jobs.app, name="jobs")
app.add_typer(docs.app, name="docs")
app.command()(up)
app.command()(console)
app.command()(jobs.run)


@app.callback()
def main(
    ctx: typer.Context,
    manager: Annotated[str, typer.Option(envvar="QUAERO_MANAGER", help="The manager's HOST:PORT.")] = DEFAULT_MANAGER,
    executor: Annotated[str, typer.Option(envvar="QUAERO_EXECUTOR", help="The executor's HOST:PORT.")]
    = DEFAULT_EXECUTOR,
) -> None:
    """Talks to the services at --manager/--executor with the token from QUAERO_API_TOKEN or the
    api-token file in QUAERO_DATA_DIR (default ./.quaero)."""
    ctx.obj = Target(manager, executor)
    ctx.call_on_close(ctx.obj.close)


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
