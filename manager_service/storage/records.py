"""What storage returns: typed records built from rows, and the small values stores take."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from quaero.cookies.session import SessionCookie
from quaero.errors import InvalidArgument, Reason
from quaero.job_status import JobStatus

MAX_NAME_CHARS = 512
MAX_TYPE_CHARS = 64
MAX_CHILDREN_PER_CALL = 5000  # as many links as the crawler takes from one page
MAX_DEDUP_KEY_CHARS = 256  # longer keys (long URLs) are stored as their SHA-256


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    parent_id: str | None
    type: str
    name: str
    status: JobStatus
    config: dict[str, Any]
    metadata: dict[str, Any]
    result: dict[str, Any]
    error: str
    error_reason: str
    progress_current: int
    progress_total: int
    children_failed: int
    depth: int
    version: int
    request_id: str | None
    dedup_key: str | None
    lease_token: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    not_before: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    metadata_version: int
    definition_id: str = ""
    previous_run_id: str = ""
    documents: DocumentCounts = field(default_factory=lambda: DocumentCounts())

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        return cls(
            id=row["id"], parent_id=row["parent_id"], type=row["type"], name=row["name"],
            status=JobStatus(row["status"]), config=row["config"] or {}, metadata=row["metadata"] or {},
            result=row["result"] or {}, error=row["error"] or "", error_reason=row["error_reason"] or "",
            progress_current=row["progress_current"] or 0, progress_total=row["progress_total"] or 0,
            children_failed=row["children_failed"] or 0, depth=row["depth"] or 0, version=row["version"],
            request_id=row["request_id"], dedup_key=row["dedup_key"], lease_token=row["lease_token"],
            lease_owner=row["lease_owner"], lease_expires_at=row["lease_expires_at"], attempts=row["attempts"] or 0,
            not_before=row["not_before"], created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], updated_at=row["updated_at"], metadata_version=row["metadata_version"],
            definition_id=row.get("definition_id") or "", previous_run_id=row.get("previous_run_id") or "",
            documents=DocumentCounts(row.get("docs_new") or 0, row.get("docs_changed") or 0,
                                     row.get("docs_unchanged") or 0, row.get("docs_gone") or 0))

    @property
    def etag(self) -> str:
        """Changes on every write of the job."""
        return str(self.version)

    @property
    def metadata_etag(self) -> str:
        """Changes only when the metadata is written (progress and status leave it alone)."""
        return str(self.metadata_version)


@dataclass(frozen=True, slots=True)
class DocumentCounts:
    """A run's documents against the latest stored versions of their URLs."""
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    gone: int = 0


NEW, CHANGED, UNCHANGED, GONE = "new", "changed", "unchanged", "gone"
KINDS = (NEW, CHANGED, UNCHANGED, GONE)


@dataclass(frozen=True, slots=True)
class JobLog:
    id: int
    job_id: str
    level: int
    message: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobLog:
        return cls(row["id"], row["job_id"], row["level"], row["message"], row["created_at"])


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    url: str
    final_url: str
    title: str
    text: str
    text_truncated: bool
    content_hash: str
    content_type: str
    status_code: int
    job_id: str
    parent_job_id: str
    fetched_at: datetime
    kind: str = NEW
    etag: str = ""
    last_modified: str = ""
    definition_id: str = ""
    auth_id: str = ""
    links: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], kind: str = "") -> Document:
        return cls(row["id"], row["url"], row["final_url"], row["title"], row.get("text") or "",
                   bool(row["text_truncated"]), row["content_hash"], row["content_type"], row["status_code"],
                   row["job_id"], row["parent_job_id"], row["fetched_at"], kind or row["kind"], row["etag"],
                   row["last_modified"], row["definition_id"], row["auth_id"])


@dataclass(frozen=True, slots=True)
class PreviousVersion:
    """The latest stored version of a URL in a definition: what a new fetch of it is compared with."""
    document_id: str
    final_url: str
    etag: str
    last_modified: str
    content_hash: str
    auth_id: str
    links: tuple[str, ...] = ()


@dataclass
class ChildSpec:
    type: str
    name: str
    config: dict[str, Any]
    dedup_key: str
    depth: int


@dataclass
class CreatedChildren:
    jobs: list[Job] = field(default_factory=list)
    duplicates: int = 0
    over_limit: int = 0


@dataclass
class Completion:
    """How a leased job ends, as CompleteLeasedJob says it."""
    job_id: str
    token: str
    status: JobStatus
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    error_reason: str = ""
    document: DocumentInput | None = None
    children: Sequence[ChildSpec] = ()
    max_children: int = 0
    retry_after: timedelta = timedelta(0)
    session_cookies: Sequence[SessionCookie] = ()  # what the page's responses set (sessions.SessionStore)


@dataclass
class DocumentInput:
    url: str
    final_url: str
    title: str
    text: str
    content_hash: str
    content_type: str
    status_code: int
    text_truncated: bool = False
    etag: str = ""
    last_modified: str = ""
    auth_id: str = ""
    links: Sequence[str] = ()
    not_modified: bool = False  # 304 to previous_document_id's validators: its content is this page's
    previous_document_id: str = ""


def check_text(value: str, field: str, max_chars: int, too_long: Reason = Reason.VALUE_TOO_LONG) -> str:
    """A client's text for a bounded column: the same answer on both databases (PostgreSQL refuses NUL
    and over-long values with an error of its own; SQLite would store them)."""
    if len(value) > max_chars:
        raise InvalidArgument(too_long, f"{field} is {len(value)} characters; the limit is {max_chars}", field)
    if "\x00" in value:
        raise InvalidArgument(Reason.NUL_CHARACTER, f"{field} contains a NUL character (U+0000), which cannot be "
                              "stored", field)
    return value


def check_children(specs: Any, field: str) -> None:
    """Children a client sends: at most MAX_CHILDREN_PER_CALL, type within its limit, no NUL anywhere (a long
    name is cut, not refused: the crawler names children after their URLs)."""
    if len(specs) > MAX_CHILDREN_PER_CALL:
        raise InvalidArgument(Reason.TOO_MANY_CHILDREN, f"{field} holds {len(specs)} children; one call takes at "
                              f"most {MAX_CHILDREN_PER_CALL}", field)
    for index, spec in enumerate(specs):
        check_text(spec.type, f"{field}[{index}].type", MAX_TYPE_CHARS, Reason.TYPE_TOO_LONG)
        check_text(spec.name, f"{field}[{index}].name", len(spec.name))
        check_text(spec.dedup_key, f"{field}[{index}].dedup_key", len(spec.dedup_key))


def version_of(etag: str) -> int | None:
    try:
        return int(etag.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError:
        return None


def dedup_key_of(key: str) -> str:
    """The stored form of a child's dedup key: itself, or its SHA-256 when long (any URL fits)."""
    if not key:
        return str(uuid.uuid4())
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
