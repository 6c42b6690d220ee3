"""Reading the status code and ErrorInfo/BadRequest details of a failed call."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from manager_service.grpc_common import error_info


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, reason: str | None = None,
                 field: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    got_reason, got_field = error_info(error)
    if reason is not None:
        assert got_reason == reason, f"expected reason {reason}, got {got_reason!r} ({error.details()})"
    if field is not None:
        assert got_field == field, f"expected field {field}, got {got_field!r}"
    assert error.details(), "the error has no message for a person"
    return error
