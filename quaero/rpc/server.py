"""Assembling and running a gRPC service: the server (interceptors, health, reflection, TLS, message
limits, its watchdog), the one ready line, signals and a stop that always stops, and a main that fails in
one line instead of a traceback."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .. import tracing
from ..config import ServerTls, stall_seconds, stop_seconds
from ..limits import MAX_MESSAGE_BYTES, MAX_RECEIVE_BYTES
from .health import NOT_SERVING, SERVING, Health
from .interceptors import BearerToken, ExceptionToStatus, FaultInjection, RpcMetrics
from .pool import WorkerPool
from .reflection import enable_reflection
from .roles import AccessPolicy, Role
from .watchdog import STALL_SECONDS, Watchdog, describe_running, thread_stacks

log = logging.getLogger("quaero.grpc")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The HTTP libraries log request and response headers (Cookie, Set-Cookie) at DEBUG: they stay at
# WARNING whatever the service's level, so no cookie value reaches a log.
QUIET_LOGGERS = ("alembic", "httpx", "httpcore", "h11", "hpack")
SIGNAL_POLL_SECONDS = 0.2
GRACE_SECONDS = 5.0  # calls in flight may finish within this when a service stops ...
STOP_SECONDS = 10.0  # ... and the whole stop within this, or the process exits hard (QUAERO_STOP_SECONDS)
EXIT_FORCED = 1


@dataclass
class Service:
    server: grpc.Server
    health: Health
    port: int
    names: tuple[str, ...]
    faults: FaultInjection | None  # set only when fault injection is on (tests reconfigure it)
    auth: BearerToken  # role_of(context.invocation_metadata()): the caller's role
    pool: WorkerPool
    watchdog: Watchdog

    def start(self) -> None:
        self.server.start()
        self.watchdog.start()

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Not serving (health says so at once, and its watchers are told and let go), the calls ended
        within `grace`, the worker threads gone (gRPC leaves an executor it was given running: every
        stopped server left its threads behind)."""
        self.watchdog.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.health.stop()
        self.pool.shutdown(wait=False)

    def running(self) -> str:
        """What the server's workers are doing (for a forced stop's log line)."""
        return describe_running(self.pool)

    def mark_serving(self) -> None:
        for name in [*self.names, ""]:
            self.health.set(name, SERVING)


def build_server(register: Callable[[grpc.Server], Iterable[str]], *, tokens: Mapping[str, Role], listen: str,
                 errors: ExceptionToStatus, pool: WorkerPool, access: AccessPolicy | None = None,
                 tls: ServerTls | None = None, faults: str = "") -> Service:
    """A thread-pool server whose every RPC but health needs the bearer token and whose errors all become
    status in `errors`; with health (NOT_SERVING until mark_serving) and reflection. `register` adds the
    servicers and returns their full service names."""
    auth = BearerToken(tokens, access)
    interceptors: list[grpc.ServerInterceptor] = [RpcMetrics(), auth]
    traced = tracing.server_interceptor()
    if traced is not None:
        interceptors.insert(0, traced)  # (outermost: the span covers the whole call)
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
    health = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection([*names, HEALTH_SERVICE], server)
    if tls is not None:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())]))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    for name in [*names, ""]:
        health.set(name, NOT_SERVING)
    watchdog = Watchdog(server, pool, stall_seconds(STALL_SECONDS))
    return Service(server, health, port, names, injector, auth, pool, watchdog)


def banner(program: str, listen: str, port: int, details: str) -> str:
    """The one line a service prints when it is ready: '<program> serving on HOST:PORT (details)'."""
    return f"{program} serving on {listen.rsplit(':', 1)[0]}:{port} ({details})"


def parse_banner(line: str) -> str:
    """The address in a ready line; '' if the line is not one."""
    if " serving on " not in line:
        return ""
    return line.split(" serving on ", 1)[1].split()[0]


def serve_until_signalled(ready_line: str, stop: Callable[[], None], running: Callable[[], str] = lambda: "") -> None:
    """Prints the one ready line, then waits for SIGTERM/SIGINT and stops: gracefully within the stop
    limit (QUAERO_STOP_SECONDS, default 10 s), else hard, with a log line saying what was still running
    (`running()`, and every thread's stack). A second signal during the stop exits hard at once."""
    limit = stop_seconds(STOP_SECONDS)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if done.is_set():
            exit_hard(f"signal={signum} again during the stop", running)
        log.info("event=shutdown signal=%d", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(ready_line, flush=True)
    # In slices: the kernel may deliver SIGTERM to any of gRPC's threads, and then only records it
    # for the main thread; an untimed wait would never return to run the handler.
    while not done.wait(SIGNAL_POLL_SECONDS):
        pass
    # The stop may itself get stuck (a lock, a thread that never ends, gRPC's completion-queue thread):
    # a timer thread ends the process at the limit, and should even that thread never run again (a
    # thread that holds the GIL for ever), the kernel's SIGALRM a few seconds later.
    deadline = threading.Timer(limit, exit_hard, args=(f"stop_seconds={limit:g} passed", running))
    deadline.daemon = True
    deadline.start()
    signal.alarm(int(limit) + 5)
    stop()
    deadline.cancel()
    signal.alarm(0)


def exit_hard(why: str, running: Callable[[], str]) -> None:
    """Ends the process now (exit code 1), after logging what it was still doing."""
    try:
        log.error("event=shutdown_forced why=%r %s", why, running())
        log.error("event=thread_stacks\n%s", thread_stacks())
        for handler in logging.getLogger().handlers:
            handler.flush()
    finally:
        os._exit(EXIT_FORCED)


def run_main(program: str, log_level: str, serve: Callable[[], None],
             expected: Sequence[type[BaseException]] = (OSError,)) -> int:
    """A service's main: key=value logs on stderr, and any start-up failure as one line, not a traceback."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a hung service is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    caught: tuple[type[BaseException], ...] = (*expected, tracing.TracingMisconfigured)
    try:
        tracing.configure(program)  # (off unless the OTEL_* variables ask for it)
        serve()
    except caught as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"{program}: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0
