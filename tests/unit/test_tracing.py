"""Tracing's switch (the standard OTEL_* variables, off by default) and what it leaves alone when off."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from quaero import tracing


@pytest.mark.parametrize(("env", "wanted"), [
    ({}, ""),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, ""),  # (no exporter named: off)
    ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "none"}, ""),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, ""),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ""),
])
def test_tracing_is_on_only_when_an_exporter_is_asked_for(env: dict[str, str], wanted: str) -> None:
    assert tracing.exporter_wanted(env) == wanted


def test_an_exporter_this_build_lacks_is_refused_by_name() -> None:
    with pytest.raises(tracing.TracingMisconfigured, match="OTEL_TRACES_EXPORTER=jaeger is not supported"):
        tracing.exporter_wanted({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(tracing.TracingMisconfigured, match="OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"):
        tracing.configure("quaero-test", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert not tracing.enabled()


def test_a_service_asked_for_an_unknown_exporter_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin", "QUAERO_DATA_DIR": str(tmp_path)}
    started = subprocess.run([sys.executable, "-m", "manager_service", "--listen", "127.0.0.1:0"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert started.stderr.strip() == ("quaero-manager: OTEL_TRACES_EXPORTER=zipkin is not supported here; use otlp or "
                                      "console (or none)")


def test_off_nothing_is_installed() -> None:
    assert not tracing.enabled()
    assert tracing.server_interceptor() is None
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        assert tracing.traced_channel(channel) is channel
    finally:
        channel.close()
    assert tracing.current_carrier() == {}
    assert tracing.context_from({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    assert tracing.start_span("x") is None
    assert isinstance(tracing.step("x", {}), contextlib.nullcontext)
    assert isinstance(tracing.active(None), contextlib.nullcontext)


def test_a_url_in_a_span_loses_its_user_and_password() -> None:
    assert tracing.safe_url("https://user:secret@example.test:8443/a?b=1") == "https://example.test:8443/a?b=1"
    assert tracing.safe_url("http://127.0.0.1:8080/p/1") == "http://127.0.0.1:8080/p/1"
