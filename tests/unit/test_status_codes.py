"""An outcome inside an answer (CompleteLeasedJobs) carries its google.rpc.Code as a number: the server
writes it from the error, the executor reads it back as a grpc.StatusCode."""
from __future__ import annotations

import grpc

from quaero.errors import InvalidArgument, JobNotFound, LeaseLost, Reason
from quaero.rpc.status import code_number, status_code


def test_error_codes_go_out_as_numbers_and_come_back_as_status_codes() -> None:
    errors = [LeaseLost("j", "gone"), JobNotFound("j"), InvalidArgument(Reason.INVALID_STATUS, "no", "status")]
    assert [code_number(error) for error in errors] == [10, 5, 3]
    assert [status_code(code_number(error)) for error in errors] == [
        grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT]
    assert status_code(0) == grpc.StatusCode.OK and status_code(999) == grpc.StatusCode.UNKNOWN
