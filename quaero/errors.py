"""Errors with a stable, machine-readable reason: what storage, runs and the crawl raise, what the server
turns into a status (quaero.rpc.status.to_status) and what a client gets back (from_rpc_error).

Every reason the system gives is spelled once, in Reason: the ErrorInfo reasons of RPC errors and the
verdicts a page's child job ends with (its error_reason). No gRPC here: storage imports this module.
"""
from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Requests: ids, fields and limits
    INVALID_JOB_ID = "INVALID_JOB_ID"
    INVALID_STATUS = "INVALID_STATUS"
    INVALID_MODE = "INVALID_MODE"
    INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    INVALID_QUERY = "INVALID_QUERY"
    INVALID_SCHEDULE = "INVALID_SCHEDULE"
    INVALID_DOCUMENT_KIND = "INVALID_DOCUMENT_KIND"
    INVALID_PREVIOUS_DOCUMENT = "INVALID_PREVIOUS_DOCUMENT"
    RUN_STILL_RUNNING = "RUN_STILL_RUNNING"
    NOT_A_RUN = "NOT_A_RUN"
    PAGE_TOKEN_MISMATCH = "PAGE_TOKEN_MISMATCH"
    INVALID_PROGRESS = "INVALID_PROGRESS"
    INVALID_REQUEST_ID = "INVALID_REQUEST_ID"
    INVALID_LEASE_DURATION = "INVALID_LEASE_DURATION"
    INVALID_RETRY_AFTER = "INVALID_RETRY_AFTER"
    INVALID_WORKER_ID = "INVALID_WORKER_ID"
    INVALID_AUTH_ID = "INVALID_AUTH_ID"
    INVALID_DEFINITION = "INVALID_DEFINITION"
    INVALID_CREDENTIALS_ID = "INVALID_CREDENTIALS_ID"
    INVALID_DEFINITION_ID = "INVALID_DEFINITION_ID"
    INVALID_DOCUMENT_ID = "INVALID_DOCUMENT_ID"
    INVALID_SITE_DOMAIN = "INVALID_SITE_DOMAIN"
    INVALID_USER_AGENT = "INVALID_USER_AGENT"
    MISSING_SITE_DOMAIN = "MISSING_SITE_DOMAIN"
    MISSING_DOCUMENT_KEY = "MISSING_DOCUMENT_KEY"
    MISSING_DEFINITION_ID = "MISSING_DEFINITION_ID"
    NO_VALID_COOKIES = "NO_VALID_COOKIES"
    NOT_AN_OBJECT = "NOT_AN_OBJECT"
    INVALID_VALUE = "INVALID_VALUE"
    NUL_CHARACTER = "NUL_CHARACTER"
    METADATA_TOO_LARGE = "METADATA_TOO_LARGE"
    METADATA_TOO_DEEP = "METADATA_TOO_DEEP"
    NAME_TOO_LONG = "NAME_TOO_LONG"
    TYPE_TOO_LONG = "TYPE_TOO_LONG"
    VALUE_TOO_LONG = "VALUE_TOO_LONG"
    EMPTY_LOG_MESSAGE = "EMPTY_LOG_MESSAGE"
    TOO_MANY_CHILDREN = "TOO_MANY_CHILDREN"
    INVALID_UTF8 = "INVALID_UTF8"
    MESSAGE_TOO_DEEP = "MESSAGE_TOO_DEEP"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    # Resources and state
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    DEFINITION_NOT_FOUND = "DEFINITION_NOT_FOUND"
    DEFINITION_EXISTS = "DEFINITION_EXISTS"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    CREDENTIALS_NOT_FOUND = "CREDENTIALS_NOT_FOUND"
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    ETAG_MISMATCH = "ETAG_MISMATCH"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    PARENT_TERMINAL = "PARENT_TERMINAL"
    LEASE_LOST = "LEASE_LOST"
    WRITE_CONFLICT = "WRITE_CONFLICT"
    TOO_MANY_COMPLETIONS = "TOO_MANY_COMPLETIONS"
    DUPLICATE_COMPLETION = "DUPLICATE_COMPLETION"
    SECRET_KEY_MISMATCH = "SECRET_KEY_MISMATCH"
    # Access and infrastructure
    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_INVALID = "TOKEN_INVALID"
    ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    MANAGER_UNAVAILABLE = "MANAGER_UNAVAILABLE"
    MANAGER_REJECTED_EXECUTOR_TOKEN = "MANAGER_REJECTED_EXECUTOR_TOKEN"
    FAULT_INJECTED = "FAULT_INJECTED"
    INTERNAL = "INTERNAL"
    # How a run ends
    TOO_MANY_CHILD_FAILURES = "TOO_MANY_CHILD_FAILURES"
    CANCELLED_BY_USER = "CANCELLED_BY_USER"
    CANCELLED_BY_SCHEDULE = "CANCELLED_BY_SCHEDULE"
    PARENT_CANCELLED = "PARENT_CANCELLED"
    START_FAILED = "START_FAILED"
    # How a page ends (a child job's error_reason; see README, "Verdicts")
    AUTH_EXPIRED = "AUTH_EXPIRED"
    SESSION_SUPERSEDED = "SESSION_SUPERSEDED"  # (a page given back: its session value was replaced meanwhile)
    AUTH_REJECTED = "AUTH_REJECTED"
    AUTH_NOT_FOUND = "AUTH_NOT_FOUND"
    CREDENTIALS_UNAVAILABLE = "CREDENTIALS_UNAVAILABLE"
    ROBOTS_DISALLOWED = "ROBOTS_DISALLOWED"
    ROBOTS_UNAVAILABLE = "ROBOTS_UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"
    FETCH_TIMEOUT = "FETCH_TIMEOUT"
    FETCH_FAILED = "FETCH_FAILED"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    BAD_CONTENT_ENCODING = "BAD_CONTENT_ENCODING"
    BAD_RESPONSE = "BAD_RESPONSE"
    BAD_REDIRECT = "BAD_REDIRECT"
    TOO_MANY_REDIRECTS = "TOO_MANY_REDIRECTS"
    LOGOUT_REDIRECT = "LOGOUT_REDIRECT"
    BLOCKED_ADDRESS = "BLOCKED_ADDRESS"
    DNS_FAILED = "DNS_FAILED"
    CONNECT_FAILED = "CONNECT_FAILED"
    TLS_FAILED = "TLS_FAILED"
    NON_GET_NAVIGATION = "NON_GET_NAVIGATION"
    RENDER_TIMEOUT = "RENDER_TIMEOUT"
    RENDER_TOO_LARGE = "RENDER_TOO_LARGE"
    BROWSER_UNAVAILABLE = "BROWSER_UNAVAILABLE"
    BROWSER_CRASHED = "BROWSER_CRASHED"
    BROWSER_HUNG = "BROWSER_HUNG"
    RECORD_FAILED = "RECORD_FAILED"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    LEASE_ATTEMPTS_EXHAUSTED = "LEASE_ATTEMPTS_EXHAUSTED"


class QuaeroError(Exception):
    """An error with a canonical status code (by name: no gRPC here), a Reason, a message a person can act
    on, and where a request field is at fault, that field."""

    code_name = "INTERNAL"

    def __init__(self, reason: str, message: str, field: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.metadata = metadata or {}


class NotFound(QuaeroError):
    code_name = "NOT_FOUND"


class InvalidArgument(QuaeroError):
    code_name = "INVALID_ARGUMENT"


class Aborted(QuaeroError):
    code_name = "ABORTED"


class FailedPrecondition(QuaeroError):
    code_name = "FAILED_PRECONDITION"


class AlreadyExists(QuaeroError):
    code_name = "ALREADY_EXISTS"


class Unavailable(QuaeroError):
    code_name = "UNAVAILABLE"


class DeadlineExceeded(QuaeroError):
    code_name = "DEADLINE_EXCEEDED"


class Unauthenticated(QuaeroError):
    code_name = "UNAUTHENTICATED"


class PermissionDenied(QuaeroError):
    code_name = "PERMISSION_DENIED"


class ResourceExhausted(QuaeroError):
    code_name = "RESOURCE_EXHAUSTED"


class Cancelled(QuaeroError):
    code_name = "CANCELLED"


class Internal(QuaeroError):
    code_name = "INTERNAL"


_BY_CODE = {cls.code_name: cls for cls in (NotFound, InvalidArgument, Aborted, FailedPrecondition, AlreadyExists,
                                          Unavailable, DeadlineExceeded, Unauthenticated, PermissionDenied,
                                          ResourceExhausted, Cancelled, Internal)}


def error_for(code_name: str, reason: str, message: str, field: str | None = None,
              metadata: dict[str, str] | None = None) -> QuaeroError:
    """The QuaeroError of a status code's name (the inverse of code_name); unknown codes are Internal."""
    error = _BY_CODE.get(code_name, QuaeroError)(reason, message, field, metadata)
    error.code_name = code_name
    return error


class JobNotFound(NotFound):
    def __init__(self, job_id: str, field: str = "job_id", what: str = "job") -> None:
        super().__init__(Reason.JOB_NOT_FOUND, f"{what} {job_id} does not exist", field, {"job_id": job_id})


class LeaseLost(Aborted):
    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(Reason.LEASE_LOST, f"the lease on job {job_id} is no longer held by this token ({why})",
                         "lease_token", {"job_id": job_id})
