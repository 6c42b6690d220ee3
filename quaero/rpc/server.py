"""Assembling and running a gRPC service: the server (interceptors, health, reflection, TLS, message
limits), the one ready line, signals, and a main that fails in one line instead of a traceback."""
from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..config import ServerTls
from ..limits import MAX_MESSAGE_BYTES, MAX_RECEIVE_BYTES
from .interceptors import BearerToken, ExceptionToStatus, FaultInjection, RpcMetrics
from .pool import WorkerPool
from .reflection import enable_reflection
from .roles import AccessPolicy, Role

log = logging.getLogger("quaero.grpc")
# The HTTP libraries log request and response headers (Cookie, Set-Cookie) at DEBUG: they stay at
# WARNING whatever the service's level, so no cookie value reaches a log.
QUIET_LOGGERS = ("alembic", "httpx", "httpcore", "h11", "hpack")
SIGNAL_POLL_SECONDS = 0.2


@dataclass
class Service:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    names: tuple[str, ...]
    faults: FaultInjection | None  # set only when fault injection is on (tests reconfigure it)
    auth: BearerToken  # role_of(context.invocation_metadata()): the caller's role
    pool: WorkerPool

    def stop(self, grace: float) -> None:
        """Not serving (health says so at once), the calls ended within `grace`, the worker threads gone
        (gRPC leaves an executor it was given running: every stopped server left its threads behind)."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.pool.shutdown(wait=False)

    def mark_serving(self) -> None:
        for name in [*self.names, ""]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)


def build_server(register: Callable[[grpc.Server], Iterable[str]], *, tokens: Mapping[str, Role], listen: str,
                 errors: ExceptionToStatus, pool: WorkerPool, access: AccessPolicy | None = None,
                 tls: ServerTls | None = None, faults: str = "") -> Service:
    """A thread-pool server whose every RPC but health needs the bearer token and whose errors all become
    status in `errors`; with health (NOT_SERVING until mark_serving) and reflection. `register` adds the
    servicers and returns their full service names."""
    auth = BearerToken(tokens, access)
    interceptors: list[grpc.ServerInterceptor] = [RpcMetrics(), auth]
    injector = None
    if faults:
        log.warning("event=fault_injection_enabled spec=%s", faults)
        injector = FaultInjection(faults)
        interceptors.append(injector)
    interceptors.append(errors)  # innermost: it sees what the handler raised
    server = grpc.server(pool, interceptors=interceptors,
                         options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    names = tuple(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection([*names, health.SERVICE_NAME], server)
    if tls is not None:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())]))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return Service(server, health_servicer, port, names, injector, auth, pool)


def banner(program: str, listen: str, port: int, details: str) -> str:
    """The one line a service prints when it is ready: '<program> serving on HOST:PORT (details)'."""
    return f"{program} serving on {listen.rsplit(':', 1)[0]}:{port} ({details})"


def parse_banner(line: str) -> str:
    """The address in a ready line; '' if the line is not one."""
    if " serving on " not in line:
        return ""
    return line.split(" serving on ", 1)[1].split()[0]


def serve_until_signalled(ready_line: str, stop: Callable[[], None]) -> None:
    """Prints the one ready line, then waits for SIGTERM/SIGINT and stops gracefully."""
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("event=shutdown signal=%d", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(ready_line, flush=True)
    # In slices: the kernel may deliver SIGTERM to any of gRPC's threads, and then only records it
    # for the main thread; an untimed wait would never return to run the handler.
    while not done.wait(SIGNAL_POLL_SECONDS):
        pass
    stop()


def run_main(program: str, log_level: str, serve: Callable[[], None],
             expected: Sequence[type[BaseException]] = (OSError,)) -> int:
    """A service's main: key=value logs on stderr, and any start-up failure as one line, not a traceback."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a hung service is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        serve()
    except tuple(expected) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"{program}: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0
