"""OpenTelemetry tracing across the pair: one trace per run.

A run's trace starts at ExecuteJobDefinition (or at the manager's schedule), and its W3C context is kept
in the run's metadata (`trace_context`), so a page leased minutes later by any executor joins it: the
page's span has the lease, the parent read, every fetch hop (URL and status only: never a header or a
cookie) and the completion under it, and the gRPC calls made for the page carry the context to the
manager (opentelemetry-instrumentation-grpc, W3C `traceparent` in the call's metadata).

Off unless the standard variables ask for it: OTEL_TRACES_EXPORTER (otlp, console) or an OTLP endpoint
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true wins. The SDK
reads the rest (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
OTEL_EXPORTER_OTLP_HEADERS...). Off, nothing is installed: no interceptor, no SDK, and every helper here
returns at once.

Calls made outside any span (the lease loop, lease renewals, the watch, batched completions) are not
traced: each would be a trace of its own, thousands per run. The servers trace a call only when it
carries a trace context, or when it starts one (ROOT_METHODS).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc

TRACE_KEY = "trace_context"  # in a run's metadata: {"traceparent": ...} (W3C)
ROOT_METHODS = frozenset({"/quaero.executor.v1.Executor/ExecuteJobDefinition"})
EXPORTERS = ("otlp", "console")

_tracer: Any = None  # an SDK tracer once tracing is on
_provider: Any = None
_get_current_span: Any = None  # opentelemetry.trace.get_current_span, once tracing is on
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class TracingMisconfigured(ValueError):
    """The OTEL_* variables ask for something this build cannot do."""


def exporter_wanted(env: Mapping[str, str] | None = None) -> str:
    """The exporter the environment asks for ('' for none: tracing off)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    names = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if names:
        unknown = [name for name in names if name not in (*EXPORTERS, "none")]
        if unknown:
            raise TracingMisconfigured(f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported here; use "
                                       f"{' or '.join(EXPORTERS)} (or none)")
        chosen = [name for name in names if name != "none"]
        return chosen[0] if chosen else ""
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return ""


def configure(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Turns tracing on when the environment asks for it (see the module); whether it is on."""
    exporter_name = exporter_wanted(env)
    if not exporter_name:
        return False
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    env = os.environ if env is None else env
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "grpc").strip()
        if protocol != "grpc":
            raise TracingMisconfigured(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported here; use grpc "
                                       "(OTLP over gRPC, port 4317)")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter()
    install(service_name, BatchSpanProcessor(exporter))
    return True


def install(service_name: str, processor: Any) -> None:
    """Tracing on with this span processor (configure's, or a test's)."""
    global _tracer, _provider, _get_current_span
    from opentelemetry.sdk.resources import OTEL_SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import get_current_span

    attributes = {} if os.environ.get(OTEL_SERVICE_NAME) else {"service.name": service_name}
    _provider = TracerProvider(resource=Resource.create(attributes))
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("quaero")
    _get_current_span = get_current_span
    atexit.register(shutdown)


def shutdown() -> None:
    """Sends the spans still buffered (a service's stop)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


# ---- gRPC -----------------------------------------------------------------------------------------------------
def server_interceptor() -> grpc.ServerInterceptor | None:
    """The server's interceptor when tracing is on: a span for each call that carries a trace context or
    starts a run's trace."""
    if _tracer is None:
        return None
    from opentelemetry.instrumentation.grpc import server_interceptor as instrumented

    def traced(details: grpc.HandlerCallDetails) -> bool:
        return details.method in ROOT_METHODS or any(  # type: ignore[attr-defined]
            key == "traceparent" for key, _value in (details.invocation_metadata or ()))  # type: ignore[attr-defined]

    return instrumented(tracer_provider=_provider, filter_=traced)  # type: ignore[no-any-return]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """The channel with a client span and the W3C context on each call (tracing on; the channel itself when
    off). Callers send through it only the calls made inside a span (in_span): see quaero.rpc.channel."""
    if _tracer is None:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(tracer_provider=_provider))  # type: ignore[no-any-return]


def _current_span() -> Any:
    """The calling thread's span (tracing on, inside one), else None."""
    if _tracer is None:
        return None
    span = _get_current_span()
    return span if span.get_span_context().is_valid else None


def in_span() -> bool:
    """Whether the calling thread is inside a span (tracing on)."""
    return _current_span() is not None


# ---- spans ----------------------------------------------------------------------------------------------------
def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers ({} when off or outside a span): what a run keeps."""
    if _tracer is None:
        return {}
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def context_from(carrier: Any) -> Any:
    """The context a carrier (a run's trace_context) names; None when off or when it names none."""
    if _tracer is None or not isinstance(carrier, Mapping):
        return None
    return _extracted(tuple(sorted((str(key), str(value)) for key, value in carrier.items())))


@functools.lru_cache(maxsize=256)
def _extracted(carrier: tuple[tuple[str, str], ...]) -> Any:
    # (A context is immutable and every page of a run names the same one: extracted once per run, not per page.)
    from opentelemetry.propagate import extract

    return extract(dict(carrier))


def now_ns() -> int:
    return time.time_ns()


def milliseconds(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1e6, 3)


def start_span(name: str, context: Any = None, start_ns: int | None = None,
               attributes: Mapping[str, Any] | None = None) -> Any:
    """A span that the caller ends (None when off), under `context` (None: a trace of its own)."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes)


@contextlib.contextmanager
def _active(span: Any) -> Iterator[Any]:
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False):
        yield span


def active(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Makes `span` the current one (the calls and spans inside go under it) without ending it."""
    return _NO_SPAN if span is None else _active(span)


@contextlib.contextmanager
def _step(span: Any, name: str, attributes: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    began = time.time_ns()
    facts = dict(attributes)
    try:
        yield facts
    finally:
        facts["quaero.duration_ms"] = milliseconds(began, time.time_ns())
        span.add_event(name, facts, timestamp=began)


def step(name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
    """An event on the current span for the `with` block (a fetch hop): its start, its duration and the
    facts the block adds to the dict it gets; None when off or outside any span."""
    span = _current_span()
    return _NO_SPAN if span is None else _step(span, name, attributes)


def safe_url(url: str) -> str:
    """A URL for a span: without user:password@."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
