"""Asserting on a failed call: its status code, and the reason and field its details carry."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from quaero.rpc.status import from_rpc_error


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, reason: str | None = None,
                 field: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    details = from_rpc_error(error)
    if reason is not None:
        assert details.reason == reason, f"expected reason {reason}, got {details.reason!r} ({error.details()})"
    if field is not None:
        assert details.field == field, f"expected field {field}, got {details.field!r}"
    assert error.details(), "the error has no message for a person"
    return error
