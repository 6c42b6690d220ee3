"""`quaero console`: the operator console in a browser (console_service, run as its own process: the
CLI imports no service)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import target

DEFAULT_CONSOLE = "127.0.0.1:8080"


def console(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="Where the console listens (HOST:PORT). A non-loopback address needs "
                                             "TLS or --allow-public-http.")] = DEFAULT_CONSOLE,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="…and this key (PEM).")] = None,
    allow_public_http: Annotated[bool, typer.Option(help="Plain HTTP on a non-loopback address (only behind a "
                                                         "proxy that terminates TLS).")] = False,
    idle_minutes: Annotated[float | None, typer.Option(help="Sign a browser out after this long idle "
                                                            "(default 30).")] = None,
) -> int:
    """Serve the operator console (runs live, definitions, credentials, documents) for the services at
    --manager/--executor; sign in with the operator token. Ctrl-C stops it."""
    where = target(ctx)
    command = [sys.executable, "-m", "console_service", "--listen", listen, "--manager", where.manager,
               "--executor", where.executor]
    if tls_cert:
        command += ["--tls-cert", str(tls_cert)]
    if tls_key:
        command += ["--tls-key", str(tls_key)]
    if allow_public_http:
        command.append("--allow-public-http")
    if idle_minutes is not None:
        command += ["--idle-minutes", str(idle_minutes)]
    # Ctrl-C reaches the console too (same process group); it stops gracefully, and this waits for it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(command)
    finally:
        signal.signal(signal.SIGINT, previous)
