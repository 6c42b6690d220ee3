"""QuaeroError <-> gRPC status, both ways, in one place: to_status on the server (ErrorInfo with the reason,
BadRequest with the field at fault), from_rpc_error on the client (the CLI, the executor relaying the
manager, the tests)."""
from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import QuaeroError, error_for

DOMAIN = "quaero.dev"
# Server pushback (gRFC A6): tells a client's retry policy not to retry this answer.
NO_RETRY = ("grpc-retry-pushback-ms", "-1")


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def code_number(error: QuaeroError) -> int:
    """The google.rpc.Code number of an error (as an outcome inside an answer carries it)."""
    return int(code_pb2.Code.Value(error.code_name))


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for a number it does not know)."""
    try:
        return grpc.StatusCode[code_pb2.Code.Name(number)]
    except (ValueError, KeyError):
        return grpc.StatusCode.UNKNOWN


def to_status(error: QuaeroError, *, no_retry: bool = False) -> grpc.Status:
    """The status of an error: its code, its message, and google.rpc.Status details with an ErrorInfo
    (reason, metadata) and, where a field is at fault, a BadRequest naming it. no_retry adds server
    pushback, e.g. for an UNAVAILABLE that only relays a dependency's outage: the relaying server has
    retried already, and a second layer of retries multiplied the wait (measured 9 s instead of 2 s)."""
    details = []
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=str(error.reason), domain=DOMAIN, metadata=error.metadata))
    details.append(packed)
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(packed)
    code = getattr(grpc.StatusCode, error.code_name, grpc.StatusCode.INTERNAL)
    status = rpc_status.to_status(status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message,
                                                    details=details))
    if no_retry:
        return _Status(status.code, status.details, (*tuple(status.trailing_metadata or ()), NO_RETRY))
    return status


def from_rpc_error(error: grpc.RpcError) -> QuaeroError:
    """The QuaeroError a failed call answered: its code, reason, message, field and metadata. A call that
    carries no details (e.g. a connection failure) gets its code's name as reason."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name  # type: ignore[attr-defined]
    reason, field, metadata = code.name, None, {}
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason or reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
    return error_for(code.name, reason, message, field, metadata)
