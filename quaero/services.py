"""The two services as child processes of this one (`quaero up`, the demo): start them, wait for their
ready lines, stop them; if this process dies, they get SIGTERM too (Linux), so no orphan keeps a port."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import ensure_tokens
from .rpc.server import parse_banner


class ServiceFailed(Exception):
    pass


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[str]
    address: str


def start_services(manager_listen: str, executor_listen: str, workers: int, env: dict[str, str] | None = None,
                   log_dir: Path | None = None, console_listen: str = "") -> list[ServiceProcess]:
    """Starts the manager and the executor, and the operator console when console_listen is given;
    returns them once all serve. Their logs go to this terminal, or to NAME.log in log_dir. ServiceFailed
    names what did not start."""
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    ensure_tokens()  # create the token files before either service reads them
    started: list[ServiceProcess] = []
    try:
        manager = _spawn("manager", ["manager_service", "--listen", manager_listen], environment, log_dir)
        started.append(manager)
        executor = _spawn("executor", ["executor_service", "--listen", executor_listen, "--manager",
                                       manager.address, "--workers", str(workers)], environment, log_dir)
        started.append(executor)
        if console_listen:
            started.append(_spawn("console", ["console_service", "--listen", console_listen, "--manager",
                                              manager.address, "--executor", executor.address], environment, log_dir))
    except ServiceFailed:
        stop_services(started)
        raise
    return started


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(name: str, module_args: list[str], env: dict[str, str], log_dir: Path | None) -> ServiceProcess:
    log = log_dir / f"{name}.log" if log_dir else None
    with open(log, "w") if log else contextlib.nullcontext() as log_file:  # the child keeps its own handle
        process = subprocess.Popen([sys.executable, "-m", *module_args], env=env, stdout=subprocess.PIPE,
                                   stderr=log_file, text=True, preexec_fn=_die_with_parent)
    assert process.stdout is not None
    address = parse_banner(process.stdout.readline().strip())
    if not address:
        process.wait(10)
        where = f"see {log}" if log else "see the lines above"
        raise ServiceFailed(f"the {name} did not start (exit code {process.returncode}); {where}")
    return ServiceProcess(name, process, address)


def stop_services(services: list[ServiceProcess]) -> None:
    for service in reversed(services):
        if service.process.poll() is None:
            service.process.terminate()
    for service in services:
        try:
            service.process.wait(15)
        except subprocess.TimeoutExpired:
            service.process.kill()
