"""Server interceptors, each on one small base: errors to status, the bearer token, test faults.

The base hides gRPC's four handler shapes (unary/stream in and out) behind one method,
intercept(method, request, context, method_name), as grpc-interceptor does.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..errors import (
    Internal,
    InvalidArgument,
    PermissionDenied,
    QuaeroError,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    error_for,
)
from ..limits import MAX_MESSAGE_BYTES
from .roles import TOKEN_SOURCES, AccessPolicy, Role
from .status import from_rpc_error, to_status

log = logging.getLogger("quaero.grpc")
HEALTH_PREFIX = "/grpc.health.v1.Health/"
Behaviour = Callable[[Any, grpc.ServicerContext], Any]
PUSHED = object()  # what a pushed stream's method returns: its messages go out later, through `send`


def pushed_stream(method: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a server-streaming method as pushed: gRPC calls it as method(request, context, send) and it
    returns PUSHED at once, without holding a thread; whoever has `send` later calls send(message) for
    each message (blocking until gRPC took it) and send(None) to end the call with the status set on the
    context. (gRPC's sync server calls this `experimental_non_blocking`.)"""
    method.experimental_non_blocking = True  # type: ignore[attr-defined]
    return method


class ServerInterceptor(grpc.ServerInterceptor):
    """Override intercept(); call method(request, context) to go on, or don't to answer yourself."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept(self, method: Behaviour, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        return method(request, context)

    def wraps(self, method_name: str) -> bool:
        """Whether this interceptor has anything to do for the method (health checks pass untouched)."""
        return True

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        name = handler_call_details.method
        if handler is None or not self.wraps(name):
            return handler
        # A method maps to the same handler call after call (a refused token aside): wrapped once, not
        # per call (a new handler and closure per interceptor per call was ~5% of a GetJob's CPU).
        cached = self._wrapped.get(name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, name)
        self._wrapped[name] = (handler, wrapped)  # (a race only wraps twice)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, name: str) -> Any:
        for kind, factory in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                              ("unary_stream", grpc.unary_stream_rpc_method_handler),
                              ("stream_unary", grpc.stream_unary_rpc_method_handler),
                              ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            inner = getattr(handler, kind)
            if inner is None:
                continue
            if getattr(inner, "experimental_non_blocking", False):
                @pushed_stream
                def pushing(request: Any, context: grpc.ServicerContext, send: Callable[[Any], None],
                            inner: Callable[..., Any] = inner) -> Any:
                    return self.intercept(lambda request, context: inner(request, context, send), request, context,
                                          name)
                behaviour: Callable[..., Any] = pushing
            else:
                def behaviour(request: Any, context: grpc.ServicerContext, inner: Behaviour = inner) -> Any:
                    return self.intercept(inner, request, context, name)
            behaviour.rpc_method = name.rsplit("/", 1)[-1]  # type: ignore[attr-defined]  # (pool.running names it)
            return factory(behaviour, request_deserializer=self.deserializer(handler.request_deserializer),
                           response_serializer=handler.response_serializer)
        return handler

    def deserializer(self, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """The request deserializer to use (by default, the method's own)."""
        return deserialize


class Undecodable:
    """A request whose bytes did not parse, or were too many: the error to answer with, instead of the
    INTERNAL ("Exception deserializing request!") gRPC answers when a deserializer raises."""

    def __init__(self, error: QuaeroError) -> None:
        self.error = error


def decoding_safely(deserialize: Callable[[bytes], Any], max_bytes: int) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        if len(data) > max_bytes:
            return Undecodable(ResourceExhausted(
                Reason.REQUEST_TOO_LARGE, f"the request is {len(data)} bytes; the limit is {max_bytes} bytes",
                None, {"limit_bytes": str(max_bytes), "size_bytes": str(len(data))}))
        try:
            return deserialize(data)
        except DecodeError as error:
            text = str(error)
            if "UTF-8" in text:
                return Undecodable(InvalidArgument(
                    Reason.INVALID_UTF8, "a string field of the request is not valid UTF-8 (protobuf strings must "
                    "be; send bytes as base64 text)"))
            if "MaxDepth" in text:
                return Undecodable(InvalidArgument(
                    Reason.MESSAGE_TOO_DEEP, "the request is nested deeper than the protobuf decoder accepts "
                    "(100 levels; a Struct may nest at most 32 levels)"))
            return Undecodable(InvalidArgument(Reason.MALFORMED_REQUEST, "the request is not a valid protobuf "
                                               "message of the method's request type"))
    return decode


class ExceptionToStatus(ServerInterceptor):
    """The one place where errors become status, for every method and every stream:
    - a QuaeroError -> its code, with ErrorInfo (reason) and BadRequest (field) details;
    - a grpc.RpcError from a call this server made downstream (the executor calling the manager) -> the
      same status, relayed by `relay` (by default unchanged; UNAVAILABLE and DEADLINE_EXCEEDED without
      client retries: this server retried already);
    - an error a `translate` function recognises (e.g. a dropped database connection -> UNAVAILABLE),
      after running a unary method again after each of the `retry_translated` pauses;
    - anything else -> INTERNAL with an incident id to quote; the details stay in the server's log.
    Requests that do not parse (bad UTF-8, nested too deep) or are over the request limit are answered
    here too, with a reason, instead of gRPC's own INTERNAL."""

    def __init__(self, translate: Callable[[Exception], QuaeroError | None] | None = None,
                 relay: Callable[[QuaeroError], QuaeroError] | None = None,
                 max_request_bytes: int = MAX_MESSAGE_BYTES, retry_translated: Sequence[float] = ()) -> None:
        super().__init__()
        self._max_request_bytes = max_request_bytes
        self._retry_pauses = tuple(retry_translated)
        self._translate = translate
        self._relay = relay

    def wraps(self, method_name: str) -> bool:
        return not method_name.startswith(HEALTH_PREFIX)

    def deserializer(self, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        return decoding_safely(deserialize, self._max_request_bytes) if deserialize is not None else None

    def intercept(self, method: Behaviour, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        if type(request) is Undecodable:
            self._abort(context, method_name, request.error)
            return None
        for pause in (*self._retry_pauses, None):
            try:
                result = method(request, context)
                break
            except Exception as error:
                if pause is not None and self._translate is not None and not isinstance(error, QuaeroError) \
                        and self._translate(error) is not None and context.is_active():
                    # e.g. a database connection that dropped: the pool reconnects, the call runs again
                    log.warning("event=rpc_retried method=%s error=%s", method_name, type(error).__name__)
                    time.sleep(pause)
                    continue
                self._abort(context, method_name, error)
                raise
        if isinstance(result, Iterator):
            return self._stream(result, context, method_name)
        return result

    def _stream(self, responses: Iterator[Any], context: grpc.ServicerContext, method_name: str) -> Iterator[Any]:
        try:
            yield from responses
        except Exception as error:
            self._abort(context, method_name, error)
            raise

    def _abort(self, context: grpc.ServicerContext, method_name: str, error: Exception) -> None:
        if not context.is_active() or _already_aborted(context):
            return  # the client left, or the handler answered with its own status
        no_retry = False
        if isinstance(error, grpc.RpcError):
            relayed = from_rpc_error(error)
            domain_error = self._relay(relayed) if self._relay else relayed
            no_retry = domain_error.code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        elif isinstance(error, QuaeroError):
            domain_error = error
        else:
            translated = self._translate(error) if self._translate else None
            if translated is not None:
                log.warning("event=rpc_failed method=%s reason=%s error=%s", method_name, translated.reason,
                            type(error).__name__)
                domain_error = translated
            else:
                domain_error = internal_error(method_name, error)
        context.abort_with_status(to_status(domain_error, no_retry=no_retry))


def internal_error(method_name: str, error: BaseException) -> Internal:
    """INTERNAL for a bug of ours: the details (and the traceback) go to the server's log under an incident
    id, and the caller gets only that id to quote."""
    incident = uuid.uuid4().hex[:12]
    log.error("event=internal_error method=%s incident=%s error=%s", method_name, incident, type(error).__name__,
              exc_info=error)
    short = method_name.rsplit("/", 1)[-1]
    return Internal(Reason.INTERNAL, f"internal error in {short} (incident {incident}); see the server log")


def _already_aborted(context: grpc.ServicerContext) -> bool:
    try:
        code = context.code()  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return code is not None and code != grpc.StatusCode.OK


class RpcMetrics(ServerInterceptor):
    """Counts and times every RPC but health, by method and the status it ended with (the outermost
    interceptor: refusals of the token are counted too)."""

    def __init__(self) -> None:
        super().__init__()
        from ..metrics import RPC_SECONDS, RPC_TOTAL

        self._seconds = RPC_SECONDS
        self._total = RPC_TOTAL
        # (method, code) -> its histogram and counter: labels() looked up per call cost more than the
        # observe and the inc themselves. Bounded: methods times status codes.
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}

    def wraps(self, method_name: str) -> bool:
        return not method_name.startswith(HEALTH_PREFIX)

    def intercept(self, method: Behaviour, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        started = time.perf_counter()
        name = method_name.rsplit("/", 1)[-1]
        try:
            result = method(request, context)
        except BaseException:
            self._record(name, context, started, failed=True)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, name, context, started)
        if result is PUSHED:  # counted when the call ends; a status nobody set means the client left
            context.add_callback(lambda: self._record(name, context, started, unset="CANCELLED"))
            return result
        self._record(name, context, started)
        return result

    def _stream(self, responses: Iterator[Any], name: str, context: grpc.ServicerContext,
                started: float) -> Iterator[Any]:
        failed = False
        try:
            yield from responses
        except BaseException:
            failed = True
            raise
        finally:
            self._record(name, context, started, failed)

    def _record(self, name: str, context: grpc.ServicerContext, started: float, failed: bool = False,
                unset: str = "OK") -> None:
        try:
            code = context.code()  # type: ignore[attr-defined]
        except AttributeError:
            code = None
        label = code.name if code is not None else ("UNKNOWN" if failed else unset)
        series = self._series.get((name, label))
        if series is None:
            series = self._series[(name, label)] = (self._seconds.labels(name, label), self._total.labels(name, label))
        series[0].observe(time.perf_counter() - started)
        series[1].inc()


class BearerToken(ServerInterceptor):
    """Every RPC but health needs `authorization: Bearer <token>` (the scheme in any case, RFC 9110), the
    token compared in constant time with each role's; the method must be open to that role."""

    def __init__(self, tokens: Mapping[str, Role], access: AccessPolicy | None = None) -> None:
        super().__init__()
        self._tokens = [(token.encode(), role) for token, role in tokens.items() if token]
        self._access = access or AccessPolicy()

    def role_of(self, metadata: Iterable[tuple[str, Any]] | None) -> Role | None:
        """The role whose token the call carries; None for a missing or wrong token."""
        presented = _bearer(metadata)
        if not presented:
            return None
        found = None
        for token, role in self._tokens:  # all of them, whichever matches: no timing hint
            if hmac.compare_digest(presented, token):
                found = role
        return found

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata
        role = self.role_of(metadata)
        if role is not None:
            if self._access.allows(method, role):
                return handler
            needed = " or ".join(f"the {r} token ({TOKEN_SOURCES[r]})" for r in sorted(self._access.only[method]))
            error: QuaeroError = PermissionDenied(
                Reason.ROLE_NOT_ALLOWED, f"{method.rsplit('/', 1)[-1]} is not open to the {role} token; it needs "
                f"{needed}", None, {"role": str(role), "method": method})
        elif _bearer(metadata):
            error = Unauthenticated(Reason.TOKEN_INVALID, "the bearer token is wrong; use QUAERO_API_TOKEN or the "
                                    "api-token file in the manager's data directory")
        else:
            error = Unauthenticated(Reason.TOKEN_MISSING, "no `authorization: Bearer <token>` header; use "
                                    "QUAERO_API_TOKEN or the api-token file in the manager's data directory")
        return _Refusal(error)._wrap(handler, method)


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> bytes:
    """The token of an `authorization: Bearer <token>` header (b"" when there is none)."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value if isinstance(value, str) else value.decode("latin-1")
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip().encode()
            return b""
    return b""


class _Refusal(ServerInterceptor):
    """Answers with an error instead of calling the method."""

    def __init__(self, error: QuaeroError) -> None:
        super().__init__()
        self._error = error

    def intercept(self, method: Behaviour, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        context.abort_with_status(to_status(self._error))


class _Stuck(ServerInterceptor):
    """HANG: the handler never returns. FREEZE: the call is answered, but its end-of-call callback, which
    gRPC runs on the server's one completion-queue thread, never returns (the shape of the health
    deadlock of grpcio-health-checking): from then on the server answers nothing. Both last until the
    faults are configured again (or the process ends)."""

    def __init__(self, kind: str, release: threading.Event) -> None:
        super().__init__()
        self._kind = kind
        self._release = release

    def intercept(self, method: Behaviour, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        if self._kind == "HANG":
            self._release.wait()
            return method(request, context)
        context.add_callback(self._release.wait)
        return method(request, context)


class FaultInjection(ServerInterceptor):
    """For failure tests only: QUAERO_FAULT_INJECT="UpdateJobMetadata=UNAVAILABLE" fails that method;
    "Method=CODE*N" fails only its next N calls; "Method=CODE@N" lets N calls through, then fails;
    CODE HANG and FREEZE make the call stick instead (see _Stuck).
    Lets a test cause, in a real server process, a fault it could not otherwise time precisely."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._faults: dict[str, list[Any]] = {}
        self._release = threading.Event()
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
            faults[method.strip()] = [code.strip(), times, passes]
        with self._lock:
            self._faults = faults
            self._release.set()  # calls stuck by the faults before go on
            self._release = threading.Event()

    def _fault(self, name: str) -> str | None:
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
            return str(code)

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        name = handler_call_details.method.rsplit("/", 1)[-1]
        if handler is None or name not in self._faults:
            return handler
        code = self._fault(name)
        if code is None:
            return handler
        if code in ("HANG", "FREEZE"):
            return _Stuck(code, self._release)._wrap(handler, handler_call_details.method)
        error = error_for(code, Reason.FAULT_INJECTED, f"{name} failed by fault injection")
        return _Refusal(error)._wrap(handler, handler_call_details.method)
