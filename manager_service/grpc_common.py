"""gRPC plumbing both services share: error details, bearer-token auth, health, reflection,
TLS, and the client side (token, default deadlines, retries of UNAVAILABLE)."""
from __future__ import annotations

import contextlib
import functools
import hmac
import inspect
import json
import logging
import os
import queue
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from .errors import DomainError

log = logging.getLogger("quaero.grpc")
# The largest message either side accepts. The biggest a crawl sends is one page's record
# (CompleteLeasedJob): at most 1 MiB of text, 5,000 links of at most 1 MiB in all, names and
# keys; well under this. Documented in the README.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DOMAIN = "quaero.dev"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
F = TypeVar("F", bound=Callable[..., Any])


class WorkerPool(futures.Executor):
    """The gRPC server's thread pool: `workers` threads take RPCs from one queue, plus one more
    thread for each RPC parked in idle() (a stream waiting for news), so long-lived streams never
    starve short calls.

    Why not a big ThreadPoolExecutor: on 2 cores, each extra Python thread running request code
    made every call slower (GIL hand-offs; measured GetJob 2,300/s with 64 threads against 4,400/s
    with 2), while a thread that finishes a call and takes the next from the queue costs nothing.
    """

    def __init__(self, workers: int, name: str = "rpc") -> None:
        self._queue: queue.SimpleQueue[tuple[futures.Future[Any], Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = workers
        self._threads = 0
        self._parked = 0
        self._name = name
        self._shutdown = False
        self._local = threading.local()

    def _wanted(self) -> int:
        return self._workers + self._parked

    def _spawn_if_needed(self) -> None:
        # Called with the lock held.
        while self._threads < self._wanted():
            self._threads += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._threads > self._wanted() or self._shutdown:
                        self._threads -= 1
                        return
                continue
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)
            with self._lock:
                if self._threads > self._wanted() and self._queue.empty():
                    self._threads -= 1  # a parked RPC came back: the extra thread retires
                    return

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the worker pool is shut down")
            self._spawn_if_needed()
        self._queue.put((future, fn, args, kwargs))
        return future

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Marks this RPC as waiting (not working): another thread serves the queue meanwhile."""
        with self._lock:
            self._parked += 1
            self._spawn_if_needed()
        try:
            yield
        finally:
            with self._lock:
                self._parked -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            count = self._threads
        for _ in range(count):
            self._queue.put(None)


class _StatusWithTrailers(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def without_client_retries(status: grpc.Status) -> grpc.Status:
    """Tells gRPC clients not to retry this answer (server pushback), e.g. an UNAVAILABLE that only
    relays a dependency's outage: the relaying server has retried already, and a second layer of
    retries would multiply the wait (measured: 9 s instead of 2 s to learn the manager is down)."""
    trailers = (*tuple(status.trailing_metadata or ()), ("grpc-retry-pushback-ms", "-1"))
    return _StatusWithTrailers(status.code, status.details, trailers)


def status_of(code: grpc.StatusCode, reason: str, message: str, field: str | None = None,
              metadata: dict[str, str] | None = None) -> grpc.Status:
    """A grpc.Status carrying google.rpc.Status with ErrorInfo (and BadRequest when a field is at fault)."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if field:
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=message)])
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)


def abort_for(context: grpc.ServicerContext, error: DomainError) -> None:
    code = getattr(grpc.StatusCode, error.code_name)
    context.abort_with_status(status_of(code, error.reason, error.message, error.field, error.metadata))


def _internal(context: grpc.ServicerContext, name: str, error: Exception) -> None:
    # The details stay in the server log (SQL parameters are hidden by the engines); the caller gets
    # an id to quote, not the exception's text.
    incident = uuid.uuid4().hex[:12]
    log.error("event=internal_error method=%s incident=%s error=%s", name, incident, type(error).__name__,
              exc_info=error)
    context.abort_with_status(status_of(grpc.StatusCode.INTERNAL, "INTERNAL",
                                        f"internal error in {name} (incident {incident}); see the server log"))


# Functions that recognise an infrastructure error as a domain error (e.g. a dropped database
# connection as UNAVAILABLE); a service registers its own at start-up.
ERROR_TRANSLATORS: list[Callable[[Exception], DomainError | None]] = []


def _translated(error: Exception) -> DomainError | None:
    for translate in ERROR_TRANSLATORS:
        found = translate(error)
        if found is not None:
            return found
    return None


def _fail(context: grpc.ServicerContext, name: str, error: Exception) -> None:
    translated = _translated(error)
    if translated is not None:
        log.warning("event=rpc_unavailable method=%s reason=%s error=%s", name, translated.reason,
                    type(error).__name__)
        abort_for(context, translated)
    _internal(context, name, error)


def maps_domain_errors(method: F) -> F:
    """Servicer decorator: a DomainError becomes its status code with ErrorInfo/BadRequest details;
    anything unexpected becomes INTERNAL with an incident id."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from method(self, request, context)
            except DomainError as error:
                abort_for(context, error)
            except Exception as error:
                if context.is_active() and not isinstance(error, grpc.RpcError):
                    _fail(context, method.__name__, error)
                raise
        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except DomainError as error:
            abort_for(context, error)
        except Exception as error:
            if isinstance(error, grpc.RpcError) or not context.is_active():
                raise
            _fail(context, method.__name__, error)
    return unary  # type: ignore[return-value]


def error_info(error: grpc.RpcError) -> tuple[str, str]:
    """(reason, field) from a failed call's details; ('', '') when it has none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason = field = ""
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
    return reason, field


def _handler_like(handler: grpc.RpcMethodHandler, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
    """A method handler of the same shape (unary/stream) as `handler` that runs `behaviour`."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            behaviour, handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            behaviour, handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            behaviour, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(behaviour, handler.request_deserializer, handler.response_serializer)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every RPC but health needs `authorization: Bearer <token>`, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        presented = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode()
        if presented and hmac.compare_digest(presented.encode(), self._expected):
            return handler
        reason = "TOKEN_INVALID" if presented else "TOKEN_MISSING"
        message = ("the bearer token is wrong" if presented else "no `authorization: Bearer <token>` header") + \
            "; use QUAERO_API_TOKEN or the api-token file in the manager's data directory"

        def deny(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(status_of(grpc.StatusCode.UNAUTHENTICATED, reason, message))

        return _handler_like(handler, deny)


class FaultInjectionInterceptor(grpc.ServerInterceptor):
    """For failure tests only: QUAERO_FAULT_INJECT="UpdateJobMetadata=UNAVAILABLE" fails that method;
    "Method=CODE*N" fails only its next N calls; "Method=CODE@N" lets N calls through, then fails.

    Lets a test cause, in a real server process, a fault it could not otherwise time precisely.
    """

    def __init__(self, spec: str) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, list[Any]] = {}
        self.configure(spec)

    def configure(self, spec: str) -> None:
        faults: dict[str, list[Any]] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            method, _, rule = item.partition("=")
            code, times, passes = rule or "UNAVAILABLE", -1, 0
            if "*" in code:
                code, count = code.split("*", 1)
                times = int(count)
            elif "@" in code:
                code, count = code.split("@", 1)
                passes = int(count)
            faults[method.strip()] = [getattr(grpc.StatusCode, code.strip()), times, passes]
        with self._lock:
            self._faults = faults

    def _fault(self, name: str) -> grpc.StatusCode | None:
        with self._lock:
            fault = self._faults.get(name)
            if fault is None:
                return None
            code, times, passes = fault
            if passes > 0:
                fault[2] -= 1
                return None
            if times == 0:
                return None
            if times > 0:
                fault[1] -= 1
            return code  # type: ignore[no-any-return]

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        name = handler_call_details.method.rsplit("/", 1)[-1]
        if handler is None or name not in self._faults:
            return handler
        code = self._fault(name)
        if code is None:
            return handler

        def fail(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(status_of(code, "FAULT_INJECTED", f"{name} failed by fault injection"))

        return _handler_like(handler, fail)


def build_server(register: Callable[[grpc.Server], Iterable[str]], token: str, listen: str,
                 workers: int = 4, pool: WorkerPool | None = None) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A thread-pool server with auth, health and reflection; `register` adds the servicers and
    returns their full service names. Returns (server, health servicer, bound port)."""
    interceptors: list[grpc.ServerInterceptor] = [BearerTokenInterceptor(token)]
    faults = os.environ.get("QUAERO_FAULT_INJECT", "")
    injector = None
    if faults:
        log.warning("event=fault_injection_enabled spec=%s", faults)
        injector = FaultInjectionInterceptor(faults)
        interceptors.append(injector)
    pool = pool or WorkerPool(workers)
    server = grpc.server(pool, interceptors=interceptors,
                         options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    names = list(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    cert, key = os.environ.get("QUAERO_TLS_CERT"), os.environ.get("QUAERO_TLS_KEY")
    if cert and key:
        with open(cert, "rb") as c, open(key, "rb") as k:
            credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(listen, credentials)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    server.fault_injector = injector  # type: ignore[attr-defined]  # tests reconfigure it
    return server, health_servicer, port


def run_service(prog: str, log_level: str, serve: Callable[[], None],
                expected: tuple[type[BaseException], ...] = (OSError,)) -> int:
    """A service's main: key=value logs on stderr, and any start-up failure as one line, not a traceback."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    # The HTTP libraries log request and response headers (Cookie, Set-Cookie) at DEBUG: they stay
    # at WARNING whatever the service's level, so no cookie value reaches a log.
    for noisy in ("alembic", "httpx", "httpcore", "h11", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        serve()
    except expected as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"{prog}: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def serve_until_signalled(banner: str, stop: Callable[[], None]) -> None:
    """Prints the one ready line, then waits for SIGTERM/SIGINT and stops gracefully."""
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("event=shutdown signal=%d", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(banner, flush=True)
    done.wait()
    stop()


def mark_serving(health_servicer: health.HealthServicer, names: Iterable[str]) -> None:
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


# ---- client side -----------------------------------------------------------------------------
class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]],
                 timeout: float | None) -> None:
        self.method = details.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class TokenAndDeadlineInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the bearer token to every call and a deadline to every unary call that has none."""

    def __init__(self, token: str, default_timeout: float) -> None:
        self._token = token
        self._timeout = default_timeout

    def _details(self, details: grpc.ClientCallDetails, unary: bool) -> _ClientCallDetails:
        metadata = list(details.metadata or [])
        if self._token:
            metadata.append(("authorization", f"Bearer {self._token}"))
        timeout = details.timeout if details.timeout is not None or not unary else self._timeout
        return _ClientCallDetails(details, metadata, timeout)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details, True), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details, False), request)


# Idempotent calls, or calls made safe by a request_id / dedup key / lease token, are retried on
# UNAVAILABLE by gRPC itself (service-config retry policy) with exponential backoff.
RETRYABLE = {
    "quaero.manager.v1.JobManager": ["CreateJob", "BatchCreateChildJobs", "GetJob", "ListJobs", "UpdateJobProgress",
                                      "UpdateJobConfig", "UpdateJobMetadata", "ListJobLogs", "GetJobStats",
                                      "LeaseJobs", "RenewLease", "CompleteLeasedJob"],
    "quaero.manager.v1.AuthStore": ["GetCredentials", "ListCredentials"],
    "quaero.manager.v1.JobDefinitions": ["GetJobDefinition", "ListJobDefinitions"],
    "quaero.manager.v1.Documents": ["GetDocument", "ListDocuments"],
    "quaero.executor.v1.Executor": ["ExecuteJobDefinition", "CancelExecution"],
}


def _service_config() -> str:
    names = [{"service": service, "method": method} for service, methods in RETRYABLE.items() for method in methods]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": {
        "maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def open_channel(address: str, token: str, default_timeout: float = 10.0) -> grpc.Channel:
    """A channel to a Quaero service: token on every call, default deadlines, retries of UNAVAILABLE.
    TLS when QUAERO_TLS_CA names the CA (or server) certificate to trust."""
    options = [("grpc.service_config", _service_config()), ("grpc.enable_retries", 1),
               ("grpc.max_receive_message_length", 64 * 1024 * 1024),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    ca = os.environ.get("QUAERO_TLS_CA")
    if ca:
        with open(ca, "rb") as handle:
            channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(handle.read()), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, TokenAndDeadlineInterceptor(token, default_timeout))
