"""Requests that do not parse, or are too big, get a status and a reason a client can act on, not
gRPC's INTERNAL "Exception deserializing request!" or a bare RESOURCE_EXHAUSTED."""
from __future__ import annotations

from typing import Any

import grpc

from quaero.api.manager.v1 import jobs_pb2
from quaero.limits import MAX_MESSAGE_BYTES
from quaero.rpc.status import from_rpc_error
from quaero.testing.harness import RunningManager
from tests.support.grpc_errors import expect_error

METHOD = "/quaero.manager.v1.JobManager/CreateJob"


def raw_call(manager: RunningManager, payload: bytes, token: str | None = None) -> Any:
    """Sends bytes as they are, as a client in another language with a bug might."""
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(manager.address, options=options) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=jobs_pb2.Job.FromString)
        return call(payload, metadata=[("authorization", f"Bearer {token or manager.token}")], timeout=30)


def test_a_string_that_is_not_utf8_is_invalid_argument(manager: RunningManager) -> None:
    payload = jobs_pb2.CreateJobRequest(type="t", name="abc").SerializeToString().replace(b"abc", b"a\xffc")
    error = expect_error(lambda: raw_call(manager, payload), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UTF8")
    assert "UTF-8" in error.details()


def test_bytes_that_are_no_message_are_invalid_argument(manager: RunningManager) -> None:
    expect_error(lambda: raw_call(manager, b"\xff\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT,
                 "MALFORMED_REQUEST")


def test_a_bad_token_is_still_refused_first_whatever_the_bytes(manager: RunningManager) -> None:
    expect_error(lambda: raw_call(manager, b"\xff\xff\xff\xff", token="wrong"), grpc.StatusCode.UNAUTHENTICATED,
                 "TOKEN_INVALID")


def test_a_request_over_the_limit_says_the_limit(manager: RunningManager) -> None:
    payload = jobs_pb2.CreateJobRequest(type="t", name="n", request_id="x" * 10).SerializeToString()
    payload += jobs_pb2.CreateJobRequest(name="y" * (MAX_MESSAGE_BYTES + 10)).SerializeToString()
    error = expect_error(lambda: raw_call(manager, payload), grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE")
    assert from_rpc_error(error).metadata["limit_bytes"] == str(MAX_MESSAGE_BYTES)
    assert str(MAX_MESSAGE_BYTES) in error.details()
    # the server is fine afterwards
    assert manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", name="after")).name == "after"
