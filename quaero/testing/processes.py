"""The real services as processes, for tests that need a process boundary (signals, kill -9, restarts,
TLS, logs): start them and wait until they report SERVING."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..rpc.server import parse_banner


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[str]
    address: str
    banner: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_console(env: dict[str, str], manager_address: str, executor_address: str,
                  listen: str = "127.0.0.1:0") -> ServiceProcess:
    """The operator console (HTTP: no gRPC health check; its ready line means it serves)."""
    return _start("console", ["console_service", "--listen", listen, "--manager", manager_address, "--executor",
                              executor_address], env, wait=False)


def wait_serving(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not report SERVING within {timeout} s")
            time.sleep(0.05)


def _start(name: str, args: list[str], env: dict[str, str], log_dir: Path | None = None,
           wait: bool = True) -> ServiceProcess:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log_dir = Path(log_dir or env.get("QUAERO_DATA_DIR") or Path.cwd())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([sys.executable, "-m", *args], env=full_env, stdout=subprocess.PIPE,
                               stderr=log_file, text=True)
    assert process.stdout is not None
    banner = process.stdout.readline().strip()
    if not banner or process.poll() is not None:
        process.wait(5)
        raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}")
    address = parse_banner(banner)
    if wait:  # (a TLS server answers no plaintext health check)
        wait_serving(address)
    return ServiceProcess(name, process, address, banner, log_path, env)


def start_manager(env: dict[str, str], listen: str = "127.0.0.1:0", wait: bool = True,
                  extra: list[str] | None = None) -> ServiceProcess:
    return _start("manager", ["manager_service", "--listen", listen, *(extra or [])], env, wait=wait)


def start_executor(env: dict[str, str], manager_address: str, listen: str = "127.0.0.1:0",
                   extra: list[str] | None = None) -> ServiceProcess:
    return _start("executor", ["executor_service", "--listen", listen, "--manager", manager_address,
                               *(extra or [])], env)
