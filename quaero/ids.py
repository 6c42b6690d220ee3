"""The ids clients send, checked the same way by every RPC that takes them (README, "Ids"):

- job and document ids are UUIDs; any spelling uuid.UUID accepts (upper case, braces, urn:uuid:) names the same row,
  and answers always carry the canonical lower-case form;
- credentials ids (auth_id): letters, digits, '.', '-' and '_', 1 to 64;
- definition ids: letters, digits, '-' and '_', 1 to 128, starting with a letter or digit;
- request ids (idempotency keys): 1 to 128 printable ASCII characters (a UUID is a good choice).
"""
from __future__ import annotations

import re
import uuid

from .errors import InvalidArgument, Reason

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CREDENTIALS_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFINITION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def shown(value: str, limit: int = 64) -> str:
    """A client's value, safe to quote in a message: escaped, and cut."""
    text = value[:limit].encode("unicode_escape").decode()
    return repr(text + ("…" if len(value) > limit else ""))


def _canonical_uuid(value: str, field: str, reason: Reason, what: str) -> str:
    lowered = value.lower()
    if UUID.fullmatch(lowered):
        return lowered
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(reason, f"{field} {shown(value)} is not {what} (a UUID such as "
                              "'3f2b8c1e-0d4a-4c6b-9a51-2f7e8d9c0b1a')", field) from None


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """The canonical (lower-case) form of a job id; InvalidArgument naming `field` if it is not one."""
    return _canonical_uuid(job_id, field, Reason.INVALID_JOB_ID, "a job id")


def check_document_id(document_id: str, field: str = "document_id") -> str:
    return _canonical_uuid(document_id, field, Reason.INVALID_DOCUMENT_ID, "a document id")


def check_credentials_id(credentials_id: str, field: str = "id") -> str:
    if not CREDENTIALS_ID.fullmatch(credentials_id):
        raise InvalidArgument(Reason.INVALID_CREDENTIALS_ID, f"{field} {shown(credentials_id)} is not a credentials "
                              "id: letters, digits, '.', '-' and '_', at most 64", field)
    return credentials_id


def check_definition_id(definition_id: str, field: str = "id") -> str:
    if not DEFINITION_ID.fullmatch(definition_id):
        raise InvalidArgument(Reason.INVALID_DEFINITION_ID, f"{field} {shown(definition_id)} is not a definition id: "
                              "letters, digits, '-' and '_', at most 128, starting with a letter or digit", field)
    return definition_id


def check_request_id(request_id: str, field: str = "request_id") -> str:
    """'' (no idempotency) or a request id."""
    if request_id and not REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(Reason.INVALID_REQUEST_ID, f"{field} {shown(request_id)} is not a request id: 1 to 128 "
                              "printable ASCII characters without spaces (a UUID is a good choice)", field)
    return request_id
