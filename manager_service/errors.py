"""Domain errors. Storage raises these; the servicers map them to gRPC status codes.

Each carries a stable machine-readable reason (ErrorInfo.reason) and, where a request field is at
fault, the field's name (BadRequest.field_violations).
"""
from __future__ import annotations


class DomainError(Exception):
    code_name = "INTERNAL"

    def __init__(self, reason: str, message: str, field: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.metadata = metadata or {}


class NotFound(DomainError):
    code_name = "NOT_FOUND"


class InvalidArgument(DomainError):
    code_name = "INVALID_ARGUMENT"


class Aborted(DomainError):
    code_name = "ABORTED"


class FailedPrecondition(DomainError):
    code_name = "FAILED_PRECONDITION"


class AlreadyExists(DomainError):
    code_name = "ALREADY_EXISTS"


class Unavailable(DomainError):
    code_name = "UNAVAILABLE"
