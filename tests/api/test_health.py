"""grpc.health.v1 (quaero.rpc.health) at servicer level, with pytest-grpc's real-server fixtures:
Check, Watch and its updates, graceful shutdown, and Watch streams cancelled while statuses change,
which froze grpcio-health-checking's servicer (the server then answered nothing)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quaero.rpc.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, Health

SERVICE = "quaero.test.v1.Thing"


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return health_pb2_grpc.add_HealthServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer() -> Iterator[Health]:
    health = Health()
    yield health
    health.stop()


@pytest.fixture(autouse=True)
def thing_not_serving(grpc_servicer: Health) -> None:
    grpc_servicer.set(SERVICE, NOT_SERVING)


@pytest.fixture(scope="module")
def grpc_stub_cls(grpc_channel: grpc.Channel) -> Any:
    return health_pb2_grpc.HealthStub


def request(service: str = "") -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def test_check_answers_each_known_service_and_not_found_for_others(grpc_stub: Any, grpc_servicer: Health) -> None:
    assert grpc_stub.Check(request(), timeout=5).status == SERVING
    assert grpc_stub.Check(request(SERVICE), timeout=5).status == NOT_SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        grpc_stub.Check(request("no.such.Service"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in (unknown.value.details() or "")


def test_watch_sends_the_status_now_and_each_change(grpc_stub: Any, grpc_servicer: Health) -> None:
    stream = grpc_stub.Watch(request(SERVICE), timeout=10)
    assert next(stream).status == NOT_SERVING
    grpc_servicer.set(SERVICE, SERVING)
    assert next(stream).status == SERVING
    grpc_servicer.set(SERVICE, SERVING)  # no change, no message
    grpc_servicer.set(SERVICE, NOT_SERVING)
    assert next(stream).status == NOT_SERVING
    unknown = grpc_stub.Watch(request("later.Service"), timeout=10)
    assert next(unknown).status == SERVICE_UNKNOWN
    grpc_servicer.set("later.Service", SERVING)
    assert next(unknown).status == SERVING
    stream.cancel()
    unknown.cancel()


@pytest.fixture
def own_server() -> Iterator[tuple[Any, Health]]:
    """A server of its own (the shutdown is for good)."""
    health = Health()
    health.set(SERVICE, NOT_SERVING)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield health_pb2_grpc.HealthStub(channel), health
    channel.close()
    server.stop(0).wait()
    health.stop()


def test_graceful_shutdown_tells_every_watcher_and_ends_their_calls(own_server: tuple[Any, Health]) -> None:
    grpc_stub, grpc_servicer = own_server
    streams = [grpc_stub.Watch(request(name), timeout=10) for name in ("", SERVICE, "no.such.Service")]
    assert [next(stream).status for stream in streams] == [SERVING, NOT_SERVING, SERVICE_UNKNOWN]
    grpc_servicer.enter_graceful_shutdown()
    # The overall status changes (and that is sent); the others had nothing new to say: each call ends OK.
    assert [message.status for message in streams[0]] == [NOT_SERVING]
    for stream in streams:
        assert list(stream) == [] and stream.code() == grpc.StatusCode.OK
    grpc_servicer.set("", SERVING)  # ignored from now on
    assert grpc_stub.Check(request(), timeout=5).status == NOT_SERVING
    late = grpc_stub.Watch(request(), timeout=10)
    assert [message.status for message in late] == [NOT_SERVING] and late.code() == grpc.StatusCode.OK


def test_watches_cancelled_while_statuses_flip_never_stop_the_server(grpc_stub: Any, grpc_servicer: Health) -> None:
    stop = threading.Event()
    failures: list[str] = []
    cycles = [0]

    def flip() -> None:
        while not stop.is_set():
            grpc_servicer.set(SERVICE, SERVING)
            grpc_servicer.set(SERVICE, NOT_SERVING)

    def churn() -> None:
        for n in range(150):
            stream = grpc_stub.Watch(request((SERVICE, "", "no.such.Service")[n % 3]), timeout=5)
            try:
                next(stream)
            except grpc.RpcError as error:
                failures.append(error.code().name)
                return
            finally:
                stream.cancel()
            cycles[0] += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    clients = [threading.Thread(target=churn) for _ in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    stop.set()
    flipper.join()
    started = time.monotonic()
    assert grpc_stub.Check(request(), timeout=1).status == SERVING
    assert time.monotonic() - started < 1
    assert not failures and cycles[0] == 600
