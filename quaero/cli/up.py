"""`quaero up`: the manager, the executor and the console on this machine until Ctrl-C or SIGTERM."""
from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from ..config import TOKEN_FILE, data_dir
from ..services import ServiceFailed, start_services, stop_services
from .common import fail, out
from .console import DEFAULT_CONSOLE


def up(
    manager_listen: Annotated[str, typer.Option(help="Where the manager listens.")] = "127.0.0.1:50051",
    executor_listen: Annotated[str, typer.Option(help="Where the executor listens.")] = "127.0.0.1:50052",
    workers: Annotated[int, typer.Option(help="Pages the executor fetches at once.")] = 16,
    console_listen: Annotated[str, typer.Option(help="Where the operator console listens; '' for no console.")]
    = DEFAULT_CONSOLE,
) -> None:
    """Start the manager (embedded SQLite in QUAERO_DATA_DIR), the executor and the operator console;
    Ctrl-C stops them all."""
    try:
        services = start_services(manager_listen, executor_listen, workers, console_listen=console_listen)
    except ServiceFailed as error:
        fail(str(error))
    stopping = threading.Event()
    # SIGTERM (e.g. from a process supervisor) stops the services too, not just this process; SIGINT is
    # handled the same way explicitly, because a process started in the background by a shell (or by a
    # parent that was) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    console = f"\nconsole  http://{services[2].address}/ (sign in with the token)" if len(services) > 2 else ""
    out.print(f"manager  {services[0].address}\nexecutor {services[1].address}{console}\n"
              f"token    {data_dir() / TOKEN_FILE} (or QUAERO_API_TOKEN)\nPress Ctrl-C to stop.", markup=False)
    try:
        while all(service.process.poll() is None for service in services):
            if stopping.wait(0.5):
                return
        fail("a service stopped unexpectedly; see its output above")
    finally:
        stop_services(services)
