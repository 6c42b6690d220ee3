"""Jobs, their logs, counters and leases, in the database. Knows nothing of gRPC.

Every write is one transaction on the writer engine. Metadata/config merges are single UPDATE
statements whose merge runs inside the database (json_patch on SQLite, quaero_json_merge_patch on
PostgreSQL), so concurrent merges never lose each other's keys.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from . import jsonvalues, paging
from .changes import ChangeNotifier
from .db import Database
from .document_limits import without_nul
from .documents_store import DocumentInput, document_values, upsert_statement
from .errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from .hot_queries import HotQueries
from .models import job_logs, jobs

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
LEGAL_TRANSITIONS = {
    PENDING: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED}),
}
LOG_LEVELS = {1: "debug", 2: "info", 3: "warning", 4: "error"}
MAX_LOG_MESSAGE = 8 * 1024
MAX_LEASE_ATTEMPTS = 5
MAX_RETRY_AFTER = timedelta(hours=1)
MAX_NAME_CHARS = 512
MAX_TYPE_CHARS = 64
MAX_DEDUP_KEY_CHARS = 256  # longer keys (long URLs) are stored as their SHA-256

Job = RowMapping

# Built once and executed with parameters: building a Core statement per call cost more than running
# it (measured at store level: a read 117 -> 57 us, an update 383 -> 99 us).
SELECT_JOB_FOR_UPDATE = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id")).with_for_update()


def now() -> datetime:
    return datetime.now(UTC)


def etag_of(job: Job) -> str:
    return str(job["version"])


JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_job_id(job_id: str, field: str = "job_id") -> str:
    lowered = job_id.lower()
    if JOB_ID.fullmatch(lowered):
        return lowered
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, AttributeError, TypeError):
        shown = job_id if len(job_id) <= 64 else job_id[:64] + "…"
        raise InvalidArgument(
            "INVALID_JOB_ID", f"{field} {shown!r} is not a job id (a UUID such as "
            "'3f2b8c1e-0d4a-4c6b-9a51-2f7e8d9c0b1a')", field) from None


def dedup_key_of(key: str) -> str:
    """The stored form of a child's dedup key: itself, or its SHA-256 when long (any URL fits)."""
    if not key:
        return str(uuid.uuid4())
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _version_of(etag: str) -> int | None:
    try:
        return int(etag.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError:
        return None


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


class JobStore:
    def __init__(self, db: Database, notifier: ChangeNotifier | None = None) -> None:
        self.db = db
        self.notifier = notifier or ChangeNotifier()
        self._postgres = db.dialect == "postgresql"
        self._update_statements: dict[tuple[Any, ...], Any] = {}
        self._document_upsert: Any = None
        self._hot = HotQueries(db)

    # ---- reads -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job_id = check_job_id(job_id)
        row = self._hot.get(job_id)
        if row is None:
            raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id})
        return row  # type: ignore[return-value]

    def list_page(self, parent_id: str, status: str, page_size: int, page_token: str,
             all_levels: bool = False) -> tuple[list[Job], str]:
        size = paging.page_size(page_size, 50)
        offset = paging.offset(page_token)
        query = sa.select(jobs)
        if parent_id:
            query = query.where(jobs.c.parent_id == check_job_id(parent_id, "parent_id"))
        elif not all_levels:
            query = query.where(jobs.c.parent_id.is_(None))
        if status:
            query = query.where(jobs.c.status == status)
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).offset(offset).limit(size + 1)
        with self.db.read_engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        next_token = str(offset + size) if len(rows) > size else ""
        return rows[:size], next_token

    def stats(self, job_id: str) -> dict[str, int]:
        self.get(job_id)
        with self.db.read_engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.status, sa.func.count()).where(jobs.c.parent_id == job_id).group_by(jobs.c.status))
            counts = {status: 0 for status in STATUSES}
            for status, count in rows:
                counts[status] = count
        return counts

    def list_logs(self, job_id: str, page_size: int, page_token: str,
                  include_children: bool = False) -> tuple[list[RowMapping], str]:
        self.get(job_id)
        size = paging.page_size(page_size, 100)
        after = paging.offset(page_token)
        query = sa.select(job_logs).where(job_logs.c.id > after)
        if include_children:
            children = sa.select(jobs.c.id).where(jobs.c.parent_id == job_id)
            query = query.where(sa.or_(job_logs.c.job_id == job_id, job_logs.c.job_id.in_(children)))
        else:
            query = query.where(job_logs.c.job_id == job_id)
        query = query.order_by(job_logs.c.id).limit(size + 1)
        with self.db.read_engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        next_token = str(rows[size - 1]["id"]) if len(rows) > size else ""
        return rows[:size], next_token

    # ---- creation ----------------------------------------------------------------------------
    def create(self, *, parent_id: str, type: str, name: str, config: dict[str, Any],
               metadata: dict[str, Any], request_id: str, depth: int = 0) -> Job:
        jsonvalues.check_object(config, "config")
        jsonvalues.check_object(metadata, "metadata")
        jsonvalues.check_auth_id(metadata, "metadata")
        if parent_id:
            parent_id = check_job_id(parent_id, "parent_id")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidArgument("NAME_TOO_LONG", f"name is {len(name)} characters; the limit is {MAX_NAME_CHARS}",
                                  "name")
        if len(type) > MAX_TYPE_CHARS:
            raise InvalidArgument("TYPE_TOO_LONG", f"type is {len(type)} characters; the limit is {MAX_TYPE_CHARS}",
                                  "type")
        if len(request_id) > 128:
            raise InvalidArgument("INVALID_REQUEST_ID", "request_id is longer than 128 characters", "request_id")
        if request_id:
            existing = self._by_request_id(request_id)
            if existing is not None:
                return existing
        stamp = now()
        row = self._new_row(parent_id or None, type, name, config, metadata, depth, stamp)
        row["request_id"] = request_id or None
        try:
            with self.db.write_engine.begin() as conn:
                if parent_id:
                    self._lock_parent(conn, parent_id)
                conn.execute(sa.insert(jobs).values(row))
                if parent_id:
                    self._bump_parent(conn, parent_id, created=1)
        except sa.exc.IntegrityError:
            # Two creates with one request_id raced: the first one won; return it.
            existing = self._by_request_id(request_id) if request_id else None
            if existing is None:
                raise
            return existing
        self.notifier.notify()
        return self.get(row["id"])

    def create_children(self, parent_id: str, specs: Sequence[ChildSpec], max_children: int) -> CreatedChildren:
        parent_id = check_job_id(parent_id, "parent_id")
        for spec in specs:
            jsonvalues.check_object(spec.config, "children.config")
        with self.db.write_engine.begin() as conn:
            parent = self._lock_parent(conn, parent_id)
            if parent["status"] in TERMINAL:
                raise FailedPrecondition(
                    "PARENT_TERMINAL", f"parent job {parent_id} is {parent['status']}; it takes no more children")
            created = self._insert_children(conn, parent, specs, max_children)
        self.notifier.notify()
        return created

    def _by_request_id(self, request_id: str) -> Job | None:
        with self.db.read_engine.connect() as conn:
            return conn.execute(sa.select(jobs).where(jobs.c.request_id == request_id)).mappings().first()

    @staticmethod
    def _new_row(parent_id: str | None, type: str, name: str, config: dict[str, Any],
                 metadata: dict[str, Any], depth: int, stamp: datetime) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()), "parent_id": parent_id, "type": type, "name": name, "status": PENDING,
            "config": config, "metadata": metadata, "result": {}, "depth": depth, "version": 1,
            "created_at": stamp, "updated_at": stamp,
        }

    def _lock_parent(self, conn: Connection, parent_id: str) -> RowMapping:
        # FOR UPDATE serialises the children bookkeeping of one parent on PostgreSQL; SQLite has a
        # single writer already.
        parent = conn.execute(
            sa.select(jobs).where(jobs.c.id == parent_id).with_for_update()).mappings().first()
        if parent is None:
            raise NotFound("JOB_NOT_FOUND", f"parent job {parent_id} does not exist", "parent_id",
                           {"job_id": parent_id})
        return parent

    def _insert_children(self, conn: Connection, parent: RowMapping, specs: Iterable[ChildSpec],
                         max_children: int, bump_parent: bool = True) -> CreatedChildren:
        result = CreatedChildren()
        unique: dict[str, ChildSpec] = {}
        for spec in specs:
            key = dedup_key_of(spec.dedup_key)
            if key in unique:
                result.duplicates += 1
            else:
                unique[key] = spec
        if not unique:
            return result
        known: set[str] = set()
        keys = list(unique)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            known.update(conn.execute(sa.select(jobs.c.dedup_key).where(
                jobs.c.parent_id == parent["id"], jobs.c.dedup_key.in_(chunk))).scalars())
        room = max_children - parent["progress_total"] if max_children > 0 else len(unique)
        stamp = now()
        rows: list[dict[str, Any]] = []
        for key, spec in unique.items():
            if key in known:
                result.duplicates += 1
                continue
            if len(rows) >= room:
                result.over_limit += 1
                continue
            # A microsecond apart, so that children are leased in the order they were discovered.
            created = stamp + timedelta(microseconds=len(rows))
            name = spec.name if len(spec.name) <= MAX_NAME_CHARS else spec.name[:MAX_NAME_CHARS - 1] + "…"
            row = self._new_row(parent["id"], spec.type[:MAX_TYPE_CHARS], name, spec.config, {}, spec.depth, created)
            row["dedup_key"] = key
            rows.append(row)
        if rows:
            conn.execute(sa.insert(jobs), rows)
            if bump_parent:
                self._bump_parent(conn, parent["id"], created=len(rows))
            result.jobs = [_row_view(row) for row in rows]
        return result

    # ---- updates -----------------------------------------------------------------------------
    def update_json(self, job_id: str, column: str, value: dict[str, Any], replace: bool, etag: str) -> Job:
        """Merges (RFC 7396) or replaces the metadata or config object in one UPDATE statement."""
        job_id = check_job_id(job_id)
        text = jsonvalues.check_object(value, column)
        if column == "metadata":
            jsonvalues.check_auth_id(value, column)
        version = None
        if etag:
            parsed = _version_of(etag)
            version = parsed if parsed is not None else -1
        outcome = self._hot.update_json(job_id, column, text, not replace, version, now())
        if outcome is None:
            with self.db.read_engine.connect() as conn:
                self._raise_missing_or_stale(conn, job_id, etag)
        assert outcome is not None
        row, size = outcome
        if size > jsonvalues.MAX_JSON_BYTES:
            raise InvalidArgument(
                "METADATA_TOO_LARGE", f"{column} would be {size} bytes after the merge; the limit is "
                f"{jsonvalues.MAX_JSON_BYTES} bytes (64 KiB); nothing was written", column)
        self.notifier.notify()
        return row  # type: ignore[return-value]

    def update_progress(self, job_id: str, current: int, total: int) -> Job:
        job_id = check_job_id(job_id)
        if current < 0 or total < 0:
            raise InvalidArgument("INVALID_PROGRESS", "progress counters cannot be negative", "progress_current")
        with self.db.write_engine.begin() as conn:
            row = self._conditional_update(conn, job_id, "", {"progress_current": current, "progress_total": total})
        self.notifier.notify()
        return row

    def update_status(self, job_id: str, status: str, *, error: str = "", error_reason: str = "",
                      result: dict[str, Any] | None = None, etag: str = "") -> Job:
        job_id = check_job_id(job_id)
        if status not in STATUSES:
            raise InvalidArgument("INVALID_STATUS", "status must be one of " + ", ".join(STATUSES), "status")
        if result is not None:
            jsonvalues.check_object(result, "result")
        with self.db.write_engine.begin() as conn:
            job = conn.execute(SELECT_JOB_FOR_UPDATE, {"job_id": job_id}).mappings().first()
            if job is None:
                raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id})
            _check_transition(job, status)
            row = self._set_status(conn, job, status, etag=etag, error=error, error_reason=error_reason,
                                   result=result)
        self.notifier.notify()
        return row

    def add_log(self, job_id: str, level: int, message: str) -> RowMapping:
        job_id = check_job_id(job_id)
        if level not in LOG_LEVELS:
            level = 2
        if not message.strip():
            raise InvalidArgument("EMPTY_LOG_MESSAGE", "message is empty", "message")
        message = without_nul(message)
        if len(message) > MAX_LOG_MESSAGE:
            message = message[:MAX_LOG_MESSAGE] + "…"
        row = {"job_id": job_id, "level": level, "message": message, "created_at": now()}
        try:
            with self.db.write_engine.begin() as conn:
                log_id = conn.execute(sa.insert(job_logs).values(row).returning(job_logs.c.id)).scalar_one()
        except sa.exc.IntegrityError:
            raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id}) from None
        return {**row, "id": log_id}  # type: ignore[return-value]

    # ---- leases ------------------------------------------------------------------------------
    def lease(self, worker_id: str, max_jobs: int, duration: timedelta, type: str) -> tuple[list[Job], str]:
        max_jobs = max(1, min(max_jobs or 1, 100))
        seconds = duration.total_seconds() or 30.0
        if not 1 <= seconds <= 600:
            raise InvalidArgument("INVALID_LEASE_DURATION", "lease_duration must be between 1 s and 10 min",
                                  "lease_duration")
        token = secrets.token_hex(16)
        stamp = now()
        with self.db.write_engine.begin() as conn:
            self._expire_leases(conn, stamp)
            candidates = sa.select(jobs.c.id).where(
                jobs.c.status == PENDING, jobs.c.parent_id.is_not(None),
                sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= stamp))
            if type:
                candidates = candidates.where(jobs.c.type == type)
            candidates = candidates.order_by(jobs.c.created_at, jobs.c.id).limit(max_jobs).with_for_update(
                skip_locked=True)
            rows = list(conn.execute(
                sa.update(jobs).where(jobs.c.id.in_(candidates.scalar_subquery()))
                .values(status=RUNNING, lease_token=token, lease_owner=worker_id[:128],
                        lease_expires_at=stamp + timedelta(seconds=seconds),
                        started_at=sa.func.coalesce(jobs.c.started_at, stamp), attempts=jobs.c.attempts + 1,
                        not_before=None,
                        version=jobs.c.version + 1, updated_at=stamp)
                .returning(*jobs.c)).mappings())
        if rows:
            self.notifier.notify()
        return rows, token

    def expire_leases(self) -> int:
        with self.db.write_engine.begin() as conn:
            count = self._expire_leases(conn, now())
        if count:
            self.notifier.notify()
        return count

    def _expire_leases(self, conn: Connection, stamp: datetime) -> int:
        # An executor that stopped renewing (killed, partitioned) gives its jobs back to pending; a job
        # whose every attempt ended that way (it kills or hangs its executor) fails instead of
        # cycling forever.
        expired = conn.execute(
            sa.select(jobs.c.id, jobs.c.attempts).where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < stamp)
            .with_for_update(skip_locked=True)).all()
        retry = [job_id for job_id, attempts in expired if attempts < MAX_LEASE_ATTEMPTS]
        if retry:
            conn.execute(
                sa.update(jobs).where(jobs.c.id.in_(retry))
                .values(status=PENDING, lease_token=None, lease_owner=None, lease_expires_at=None,
                        version=jobs.c.version + 1, updated_at=stamp))
        for job_id, attempts in expired:
            if attempts >= MAX_LEASE_ATTEMPTS:
                job = conn.execute(SELECT_JOB_FOR_UPDATE, {"job_id": job_id}).mappings().one()
                self._set_status(conn, job, FAILED, error_reason="LEASE_ATTEMPTS_EXHAUSTED",
                                 error=f"gave up after {attempts} attempts: each time the lease expired before "
                                       "the job finished (its executor stopped or hung on it)")
        return len(expired)

    def renew_lease(self, job_id: str, token: str, duration: timedelta) -> Job:
        job_id = check_job_id(job_id)
        seconds = duration.total_seconds() or 30.0
        stamp = now()
        with self.db.write_engine.begin() as conn:
            row = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token, jobs.c.status == RUNNING)
                .values(lease_expires_at=stamp + timedelta(seconds=min(max(seconds, 1), 600)))
                .returning(*jobs.c)).mappings().first()
        if row is None:
            self.get(job_id)
            raise Aborted("LEASE_LOST", f"the lease on job {job_id} is no longer held by this token "
                          "(it expired or the job was cancelled)", "lease_token", {"job_id": job_id})
        return row

    def complete_leased(self, job_id: str, token: str, status: str, *, result: dict[str, Any],
                        error: str, error_reason: str, document: DocumentInput | None,
                        children: Sequence[ChildSpec], max_children: int,
                        retry_after: timedelta = timedelta(0)) -> Job:
        """Finishes a leased child in one transaction: document, discovered children, status, parent.
        PENDING gives it back instead, to be leased again after retry_after."""
        job_id = check_job_id(job_id)
        if status not in TERMINAL and status != PENDING:
            raise InvalidArgument("INVALID_STATUS", "a leased job completes as completed, failed or cancelled, "
                                  "or goes back to pending for a retry", "status")
        if status == PENDING:
            return self._give_back(job_id, token, retry_after, error, error_reason)
        jsonvalues.check_object(result, "result")
        with self.db.write_engine.begin() as conn:
            job = conn.execute(SELECT_JOB_FOR_UPDATE, {"job_id": job_id}).mappings().first()
            if job is None:
                raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id})
            if job["lease_token"] != token or not token:
                raise Aborted("LEASE_LOST", f"the lease on job {job_id} is no longer held by this token "
                              f"(the job is {job['status']})", "lease_token", {"job_id": job_id})
            if job["status"] == status:
                return job  # a retried completion: already done
            if job["status"] != RUNNING:
                raise Aborted("LEASE_LOST", f"job {job_id} is {job['status']}; the lease no longer holds it",
                              "lease_token", {"job_id": job_id})
            stamp = now()
            if document is not None:
                self._upsert_document(conn, document, job, stamp)
            created = 0
            if children and status == COMPLETED and job["parent_id"]:
                parent = self._lock_parent(conn, job["parent_id"])
                if parent["status"] not in TERMINAL:
                    created = len(self._insert_children(conn, parent, children, max_children, bump_parent=False).jobs)
            # The parent's counters take the new children and this child's end in one UPDATE.
            row = self._set_status(conn, job, status, error=error, error_reason=error_reason, result=result,
                                   children_created=created)
        self.notifier.notify()
        return row

    def _give_back(self, job_id: str, token: str, retry_after: timedelta, error: str, error_reason: str) -> Job:
        """A leased child goes back to pending, not to be leased before retry_after (the page failed in a
        way worth another try, e.g. robots.txt answered 503). The parent's counters do not move."""
        if retry_after < timedelta(0) or retry_after > MAX_RETRY_AFTER:
            raise InvalidArgument("INVALID_RETRY_AFTER", "retry_after must be between 0 and 1 hour", "retry_after")
        stamp = now()
        with self.db.write_engine.begin() as conn:
            row = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token, jobs.c.status == RUNNING)
                .values(status=PENDING, lease_token=None, lease_owner=None, lease_expires_at=None,
                        not_before=stamp + (retry_after or timedelta(seconds=1)), error=without_nul(error)[:8192],
                        error_reason=error_reason[:64], version=jobs.c.version + 1, updated_at=stamp)
                .returning(*jobs.c)).mappings().first()
            if row is None:
                job = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).first()
                if job is None:
                    raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id})
                raise Aborted("LEASE_LOST", f"the lease on job {job_id} is no longer held by this token (the job is "
                              f"{job[0]})", "lease_token", {"job_id": job_id})
        self.notifier.notify()
        return row

    def _upsert_document(self, conn: Connection, document: DocumentInput, job: RowMapping, stamp: datetime) -> None:
        if self._document_upsert is None:
            self._document_upsert = upsert_statement(self.db.dialect)
        conn.execute(self._document_upsert, document_values(document, job["id"], job["parent_id"] or "", stamp))

    # ---- internals ---------------------------------------------------------------------------
    def _update_statement(self, columns: tuple[str, ...], with_etag: bool) -> Any:
        key = (columns, with_etag)
        statement = self._update_statements.get(key)
        if statement is None:
            values: dict[str, Any] = {name: sa.bindparam(f"set_{name}", type_=jobs.c[name].type) for name in columns}
            values["version"] = jobs.c.version + 1
            values["updated_at"] = sa.bindparam("set_updated_at", type_=jobs.c.updated_at.type)
            statement = sa.update(jobs).where(jobs.c.id == sa.bindparam("where_id"))
            if with_etag:
                statement = statement.where(jobs.c.version == sa.bindparam("where_version"))
            statement = statement.values(values).returning(*jobs.c)
            self._update_statements[key] = statement
        return statement

    def _conditional_update(self, conn: Connection, job_id: str, etag: str, values: Mapping[str, Any]) -> RowMapping:
        """UPDATE ... RETURNING in one statement, conditional on the etag when one is given."""
        columns = tuple(sorted(values))
        statement = self._update_statement(columns, bool(etag))
        parameters: dict[str, Any] = {f"set_{name}": values[name] for name in columns}
        parameters.update(where_id=job_id, set_updated_at=now())
        if etag:
            version = _version_of(etag)
            parameters["where_version"] = version if version is not None else -1
        row = conn.execute(statement, parameters).mappings().first()
        if row is not None:
            return row
        self._raise_missing_or_stale(conn, job_id, etag)
        raise AssertionError("unreachable")

    @staticmethod
    def _raise_missing_or_stale(conn: Connection, job_id: str, etag: str) -> None:
        exists = conn.execute(sa.select(jobs.c.version).where(jobs.c.id == job_id)).first()
        if exists is None:
            raise NotFound("JOB_NOT_FOUND", f"job {job_id} does not exist", "job_id", {"job_id": job_id})
        raise Aborted("ETAG_MISMATCH", f"job {job_id} changed since etag {etag!r} was read (its etag is now "
                      f"{exists[0]!s}); read it again and retry", "etag", {"job_id": job_id})

    def _set_status(self, conn: Connection, job: RowMapping, status: str, *, etag: str = "", error: str = "",
                    error_reason: str = "", result: dict[str, Any] | None = None,
                    children_created: int = 0) -> RowMapping:
        stamp = now()
        values: dict[str, Any] = {"status": status}
        if status == RUNNING and job["started_at"] is None:
            values["started_at"] = stamp
        if status in TERMINAL:
            values.update(finished_at=stamp, lease_token=None, lease_expires_at=None)
        if status == COMPLETED:
            values.update(error="", error_reason="")  # what an earlier, retried attempt said no longer holds
        if error:
            values["error"] = without_nul(error)[:8192]
        if error_reason:
            values["error_reason"] = error_reason[:64]
        if result is not None:
            values["result"] = result
        row = self._conditional_update(conn, job["id"], etag, values)
        if status in TERMINAL:
            if job["parent_id"]:
                self._on_child_finished(conn, job["parent_id"], failed=status == FAILED, created=children_created)
            if status == CANCELLED:
                self._cancel_children(conn, job["id"], stamp)
        return row

    def _bump_parent(self, conn: Connection, parent_id: str, *, created: int = 0, finished: int = 0,
                     failed: int = 0) -> RowMapping:
        # Counters move in the same transaction as the child's own change: no recount, no drift.
        return conn.execute(
            sa.update(jobs).where(jobs.c.id == parent_id)
            .values(progress_total=jobs.c.progress_total + created,
                    progress_current=jobs.c.progress_current + finished,
                    children_failed=jobs.c.children_failed + failed,
                    version=jobs.c.version + 1, updated_at=now())
            .returning(*jobs.c)).mappings().one()

    def _on_child_finished(self, conn: Connection, parent_id: str, failed: bool, created: int = 0) -> None:
        parent = self._bump_parent(conn, parent_id, created=created, finished=1, failed=int(failed))
        if parent["status"] != RUNNING:
            return
        config = parent["config"] or {}
        tolerance = int(config.get("max_child_failures", 0) or 0)
        over = parent["children_failed"] > tolerance
        summary = {"children": parent["progress_total"], "failed": parent["children_failed"]}
        if over and config.get("failure_action") == "stop_all":
            message = (f"{parent['children_failed']} child jobs failed, more than the tolerance of {tolerance} "
                       "(failure_action stop_all): pending children cancelled")
            self._set_status(conn, parent, FAILED, error=message, error_reason="TOO_MANY_CHILD_FAILURES",
                             result=summary)
            self._cancel_children(conn, parent_id, now())
        elif parent["progress_current"] >= parent["progress_total"]:
            if over:
                message = (f"{parent['children_failed']} of {parent['progress_total']} child jobs failed, "
                           f"more than the tolerance of {tolerance}")
                self._set_status(conn, parent, FAILED, error=message, error_reason="TOO_MANY_CHILD_FAILURES",
                                 result=summary)
            else:
                self._set_status(conn, parent, COMPLETED, result=summary)

    def _cancel_children(self, conn: Connection, parent_id: str, stamp: datetime) -> int:
        result = conn.execute(
            sa.update(jobs).where(jobs.c.parent_id == parent_id, jobs.c.status.in_((PENDING, RUNNING)))
            .values(status=CANCELLED, finished_at=stamp, lease_token=None, lease_expires_at=None,
                    error="cancelled with its parent", error_reason="PARENT_CANCELLED",
                    version=jobs.c.version + 1, updated_at=stamp))
        count = result.rowcount or 0
        if count:
            conn.execute(sa.update(jobs).where(jobs.c.id == parent_id).values(
                progress_current=jobs.c.progress_current + count))
        return count


def _check_transition(job: RowMapping, status: str) -> None:
    current = job["status"]
    if status not in LEGAL_TRANSITIONS.get(current, frozenset()):
        if current in TERMINAL:
            message = f"job {job['id']} is {current}, a final state; it cannot become {status}"
        else:
            allowed = ", ".join(sorted(LEGAL_TRANSITIONS[current]))
            message = f"job {job['id']} is {current}; it can become {allowed}, not {status}"
        raise FailedPrecondition("ILLEGAL_TRANSITION", message, "status",
                                 {"job_id": job["id"], "from": current, "to": status})


def _row_view(row: dict[str, Any]) -> Any:
    """A plain dict with every jobs column, for rows built in Python rather than read back."""
    full: dict[str, Any] = {column.name: None for column in jobs.c}
    full.update({"progress_current": 0, "progress_total": 0, "children_failed": 0, "error": "",
                 "error_reason": "", "attempts": 0})
    full.update(row)
    return full
