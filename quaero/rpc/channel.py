"""The client side of a Quaero service: a channel that adds the token and default deadlines, lets gRPC
retry what is safe to retry, and call_patiently for the few calls worth waiting out an outage for."""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from .. import tracing
from ..limits import MAX_MESSAGE_BYTES

T = TypeVar("T")
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Idempotent calls, or calls made safe by a request_id / dedup key / lease token, are retried on
# UNAVAILABLE by gRPC itself (service-config retry policy) with exponential backoff.
RETRYABLE = {
    "quaero.manager.v1.JobManager": ["CreateJob", "BatchCreateChildJobs", "GetJob", "ListJobs", "UpdateJobProgress",
                                      "UpdateJobConfig", "UpdateJobMetadata", "ListJobLogs", "GetJobStats",
                                      "LeaseJobs", "RenewLease", "CompleteLeasedJob",
                                      "CompleteLeasedJobs"],
    "quaero.manager.v1.AuthStore": ["GetCredentials", "ListCredentials"],
    "quaero.manager.v1.JobDefinitions": ["GetJobDefinition", "ListJobDefinitions"],
    "quaero.manager.v1.Documents": ["GetDocument", "ListDocuments", "SearchDocuments"],
    "quaero.executor.v1.Executor": ["ExecuteJobDefinition", "CancelExecution"],
}
RETRY_POLICY = {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}


class _UnaryUnary:
    """A unary method with the token and a default deadline added. Not a client interceptor: grpc's
    interceptor wrapper looks the method up on the channel again on every call, and that was ~5% of an
    executor's CPU per page."""

    def __init__(self, inner: Any, metadata: tuple[tuple[str, str], ...], timeout: float, traced: Any = None) -> None:
        self._inner, self._metadata, self._timeout = inner, metadata, timeout
        self._traced = traced  # the same method through the tracing interceptor (tracing on)

    def _arguments(self, timeout: float | None, metadata: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["timeout"] = self._timeout if timeout is None else timeout
        kwargs["metadata"] = (*metadata, *self._metadata) if metadata else self._metadata
        return kwargs

    def _method(self) -> Any:
        # Only a call made inside a span goes through the tracing interceptor: its wrapper cost every call
        # (the lease loop's, the renewals', the batched records') 7% of an executor's CPU for nothing.
        return self._traced if self._traced is not None and tracing.in_span() else self._inner

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._method()(request, **self._arguments(timeout, metadata, kwargs))

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._method().with_call(request, **self._arguments(timeout, metadata, kwargs))

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._method().future(request, **self._arguments(timeout, metadata, kwargs))


class _WithToken:
    """A streaming method with the token added (a stream has no default deadline: WatchJob runs as long
    as its job does)."""

    def __init__(self, inner: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._inner, self._metadata = inner, metadata

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner(request, timeout=timeout, metadata=(*metadata, *self._metadata) if metadata
                           else self._metadata, **kwargs)


class AuthorizedChannel(grpc.Channel):
    """A channel that adds the bearer token to every call and a deadline to every unary call that has
    none."""

    def __init__(self, channel: grpc.Channel, token: str, default_timeout: float) -> None:
        self._channel = channel
        traced = tracing.traced_channel(channel)
        self._traced = traced if traced is not channel else None
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = default_timeout

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        traced = self._traced.unary_unary(method, *args, **kwargs) if self._traced is not None else None
        return _UnaryUnary(self._channel.unary_unary(method, *args, **kwargs), self._metadata, self._timeout, traced)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.unary_stream(method, *args, **kwargs), self._metadata)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.stream_unary(method, *args, **kwargs), self._metadata)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _WithToken(self._channel.stream_stream(method, *args, **kwargs), self._metadata)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AuthorizedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _service_config(balanced: bool = False) -> str:
    names = [{"service": service, "method": method} for service, methods in RETRYABLE.items() for method in methods]
    config: dict[str, Any] = {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]}
    if balanced:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def _options(balanced: bool) -> list[tuple[str, Any]]:
    return [("grpc.service_config", _service_config(balanced)), ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


def channel_target(address: str) -> tuple[str, bool]:
    """(the gRPC target for `address`, whether it names several servers). `address` is HOST:PORT, or
    several separated by commas (e.g. two managers on one PostgreSQL): they become one ipv4:/ipv6: target,
    balanced round-robin; a server that goes away is skipped, and retried calls go to the others."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address.strip(), False
    v4: list[str] = []
    v6: list[str] = []
    for part in parts:
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        try:
            resolved = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError) as error:
            raise ValueError(f"cannot resolve {part!r} in {address!r}: {error}") from None
        for family, _type, _proto, _name, sockaddr in resolved:
            ip, number = str(sockaddr[0]), int(sockaddr[1])
            entry = f"{ip}:{number}" if family == socket.AF_INET else f"[{ip}]:{number}"
            (v4 if family == socket.AF_INET else v6).append(entry)
    chosen, scheme = (v4, "ipv4") if v4 else (v6, "ipv6")
    return f"{scheme}:{','.join(dict.fromkeys(chosen))}", True


def open_channel(address: str, token: str, default_timeout: float = 10.0, tls_ca: Path | None = None) -> grpc.Channel:
    """A channel to a Quaero service: token on every call, default deadlines, gRPC's retries of
    UNAVAILABLE for the calls in RETRYABLE. TLS when tls_ca names the certificate to trust."""
    # gRPC's default 4 MiB receive limit, as every other client has: the manager's answers are built to fit
    # it (pages cut by bytes, bounded objects), and keeping it here is how this project's tests notice
    # an answer that would not.
    target, balanced = channel_target(address)
    options = _options(balanced)
    if tls_ca is not None:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(tls_ca.read_bytes()), options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return AuthorizedChannel(channel, token, default_timeout)


class _AsyncToken:
    """grpc.aio's form of AuthorizedChannel: the token on every call, a default deadline on unary ones."""

    def __init__(self, token: str, default_timeout: float) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = default_timeout

    def _details(self, details: Any, unary: bool) -> Any:
        metadata = (*(details.metadata or ()), *self._metadata)
        timeout = details.timeout if details.timeout is not None or not unary else self._timeout
        return details._replace(metadata=metadata, timeout=timeout)


# grpc.aio files an interceptor under the first of its kinds it is (an elif chain): one class per kind.
class _AsyncTokenUnary(_AsyncToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, True), request)


class _AsyncTokenStream(_AsyncToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, False), request)


def open_aio_channel(address: str, token: str, default_timeout: float = 10.0,
                     tls_ca: Path | None = None) -> grpc.aio.Channel:
    """open_channel for asyncio callers (the console): the same target, options, retries and TLS."""
    target, balanced = channel_target(address)
    options = _options(balanced)
    interceptors = [_AsyncTokenUnary(token, default_timeout), _AsyncTokenStream(token, default_timeout)]
    if tls_ca is not None:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(tls_ca.read_bytes()), options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


def call_patiently(call: Callable[[], T], give_up_after: float = 60.0,
                   wait: Callable[[float], None] = time.sleep) -> T:
    """The one application-level retry, for calls worth waiting out a restart for (a page's record, its
    parent): a transient failure (UNAVAILABLE, DEADLINE_EXCEEDED) is retried with backoff for up to
    give_up_after seconds, on top of gRPC's own quick retries. `wait` may raise to stop early."""
    deadline = time.monotonic() + give_up_after
    pause = 0.2
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in TRANSIENT or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
        wait(pause)
        pause = min(pause * 2, 2.0)
