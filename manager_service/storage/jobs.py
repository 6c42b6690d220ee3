"""Jobs and their logs: create (with deduplicated children), read, list, count, and the updates of
metadata/config (merged inside the database), progress and status. Knows nothing of gRPC.

Every write is one transaction on the writer engine. Metadata/config merges are single UPDATE
statements whose merge runs inside the database (json_patch on SQLite, an expression of jsonb operators
on PostgreSQL: jobs_sql.merge_patch_sql), so concurrent merges never lose each other's keys.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from quaero.errors import AlreadyExists, FailedPrecondition, InvalidArgument, JobNotFound, Reason
from quaero.ids import check_job_id, check_request_id
from quaero.job_status import JobStatus
from quaero.limits import without_nul

from ..notifier import ChangeNotifier
from . import jsonvalues
from .db import Database
from .job_rows import JobRows, raise_missing_or_stale
from .lifecycle import Lifecycle, check_transition
from .models import job_logs, jobs
from .paging import Listing, PageTokens, keyset_page, page_request, stamp
from .records import (
    MAX_NAME_CHARS,
    MAX_TYPE_CHARS,
    ChildSpec,
    CreatedChildren,
    Job,
    JobLog,
    check_children,
    check_text,
    version_of,
)

MAX_ERROR_REASON_CHARS = 64
LOG_LEVELS = {1: "debug", 2: "info", 3: "warning", 4: "error"}
MAX_LOG_MESSAGE = 8 * 1024


# The watch hub's read of the jobs a burst of changes touched, built once.
READ_MANY = sa.select(jobs).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))


class JobStore:
    def __init__(self, db: Database, rows: JobRows, lifecycle: Lifecycle, notifier: ChangeNotifier,
                 tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens
        self.rows = rows
        self.lifecycle = lifecycle
        self.notifier = notifier
        self._sql = rows.sql

    # ---- reads -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job_id = check_job_id(job_id)
        row = self._sql.get(job_id)
        if row is None:
            raise JobNotFound(job_id)
        return Job.from_row(row)

    def pending_children(self) -> int:
        """Child jobs waiting to be leased (for the metrics)."""
        with self.db.read_engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.status == JobStatus.PENDING.value, jobs.c.parent_id.is_not(None))).scalar() or 0)

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs with these (canonical) ids that exist, in one query."""
        found: dict[str, Job] = {}
        with self.db.read_engine.connect() as conn:
            for start in range(0, len(job_ids), 500):
                for row in conn.execute(READ_MANY, {"ids": job_ids[start:start + 500]}).mappings():
                    job = Job.from_row(row)
                    found[job.id] = job
        return found

    def list_page(self, parent_id: str, status: JobStatus | None, page_size: int, page_token: str,
                  all_levels: bool = False, definition_id: str = "", error_reason: str = "") -> Listing[Job]:
        """Newest first, by (created_at, id); definition_id keeps the runs of one definition, error_reason
        the jobs that ended with it."""
        parent_id = check_job_id(parent_id, "parent_id") if parent_id else ""
        check_text(error_reason, "error_reason", MAX_ERROR_REASON_CHARS)
        check_text(definition_id, "definition_id", MAX_NAME_CHARS)
        scope = f"ListJobs|{parent_id}|{status or ''}|{all_levels and not parent_id}|{definition_id}|{error_reason}"
        page = page_request(self.tokens, page_size, page_token, scope)
        query = sa.select(jobs)
        if parent_id:
            query = query.where(jobs.c.parent_id == parent_id)
        elif definition_id:
            query = query.where(jobs.c.parent_id.is_(None), jobs.c.definition_id == definition_id)
        elif not all_levels:
            query = query.where(jobs.c.parent_id.is_(None))
        if status:
            query = query.where(jobs.c.status == status.value)
        if error_reason:
            query = query.where(jobs.c.error_reason == error_reason)
        query = keyset_page(query, jobs.c.created_at, jobs.c.id, page)
        with self.db.read_engine.connect() as conn:
            rows = [Job.from_row(row) for row in conn.execute(query).mappings()]
        return Listing(rows, page.size, lambda job: self.tokens.make(scope, [stamp(job.created_at), job.id]))

    def stats(self, job_id: str) -> tuple[Job, dict[JobStatus, int]]:
        """The job, and its children by status."""
        job = self.get(job_id)
        counts = {status: 0 for status in JobStatus}
        with self.db.read_engine.connect() as conn:
            for status, count in conn.execute(sa.select(jobs.c.status, sa.func.count())
                                              .where(jobs.c.parent_id == job.id).group_by(jobs.c.status)):
                counts[JobStatus(status)] = count
        return job, counts

    def list_logs(self, job_id: str, page_size: int, page_token: str,
                  include_children: bool = False, newest_first: bool = False) -> Listing[JobLog]:
        """Oldest first by id, or newest first (a tail)."""
        job = self.get(job_id)
        scope = f"ListJobLogs|{job.id}|{include_children}|{newest_first}"
        page = page_request(self.tokens, page_size, page_token, scope, default=100)
        query = sa.select(job_logs)
        if page.after is not None:
            query = query.where(job_logs.c.id < page.after[0] if newest_first else job_logs.c.id > page.after[0])
        if include_children:
            children = sa.select(jobs.c.id).where(jobs.c.parent_id == job.id)
            query = query.where(sa.or_(job_logs.c.job_id == job.id, job_logs.c.job_id.in_(children)))
        else:
            query = query.where(job_logs.c.job_id == job.id)
        query = query.order_by(job_logs.c.id.desc() if newest_first else job_logs.c.id).limit(page.limit)
        with self.db.read_engine.connect() as conn:
            rows = [JobLog.from_row(row) for row in conn.execute(query).mappings()]
        return Listing(rows, page.size, lambda log: self.tokens.make(scope, [log.id]))

    # ---- creation ----------------------------------------------------------------------------
    def create(self, *, parent_id: str, type: str, name: str, config: dict[str, Any],
               metadata: dict[str, Any], request_id: str, depth: int = 0, caller: str = "") -> Job:
        """A new job. With a request_id (AIP-155), scoped to CreateJob and the caller's role: the same id
        with the same request returns the job the first call made; with another request, ALREADY_EXISTS."""
        config_text = jsonvalues.check_object(config, "config")
        metadata_text = jsonvalues.check_object(metadata, "metadata")
        jsonvalues.check_auth_id(metadata, "metadata", merge=False)
        if parent_id:
            parent_id = check_job_id(parent_id, "parent_id")
        check_text(name, "name", MAX_NAME_CHARS, Reason.NAME_TOO_LONG)
        check_text(type, "type", MAX_TYPE_CHARS, Reason.TYPE_TOO_LONG)
        check_request_id(request_id)
        key = fingerprint = None
        if request_id:
            key = _digest("CreateJob", caller, request_id)
            fingerprint = _digest(parent_id, type, name, config_text, metadata_text, str(depth))
            existing = self._by_request(key, fingerprint, request_id)
            if existing is not None:
                return existing
        row = self.rows.new_row(parent_id or None, type, name, config, metadata, depth, self.rows.clock.now())
        row["request_id"], row["request_hash"] = key, fingerprint
        definition_id = config.get("job_definition_id")
        try:
            with self.db.write_engine.begin() as conn:
                if parent_id:
                    self.rows.lock_parent(conn, parent_id)
                elif isinstance(definition_id, str) and definition_id:
                    self.rows.mark_run(conn, row, definition_id)
                conn.execute(sa.insert(jobs).values(row))
                if parent_id:
                    self.rows.bump_parent(conn, parent_id, created=1)
        except sa.exc.IntegrityError:
            # Two creates with one request_id raced: the first one won; answer as a retry would be.
            existing = self._by_request(key, fingerprint, request_id) if key else None
            if existing is None:
                raise
            return existing
        self.notifier.notify(row["id"], parent_id)
        return self.get(row["id"])

    def create_children(self, parent_id: str, specs: Sequence[ChildSpec], max_children: int) -> CreatedChildren:
        parent_id = check_job_id(parent_id, "parent_id")
        check_children(specs, "children")
        for index, spec in enumerate(specs):
            jsonvalues.check_object(spec.config, f"children[{index}].config")
        with self.db.write_engine.begin() as conn:
            parent = self.rows.lock_parent(conn, parent_id)
            if parent.status.terminal:
                raise FailedPrecondition(Reason.PARENT_TERMINAL, f"parent job {parent_id} is {parent.status}; it "
                                         "takes no more children")
            created = self.rows.insert_children(conn, parent, specs, max_children)
        self.notifier.notify(parent_id)
        return created

    def _by_request(self, key: str, fingerprint: str | None, request_id: str) -> Job | None:
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.request_id == key)).mappings().first()
        if row is None:
            return None
        if row["request_hash"] != fingerprint:
            raise AlreadyExists(Reason.REQUEST_ID_REUSED, f"request_id {request_id!r} was used before with a different "
                                "request; a retry must send the same request, and a new request needs a new "
                                "request_id", "request_id")
        return Job.from_row(row)

    # ---- updates -----------------------------------------------------------------------------
    def update_json(self, job_id: str, column: str, value: dict[str, Any], replace: bool, etag: str) -> Job:
        """Merges (RFC 7396) or replaces the metadata or config object in one UPDATE statement."""
        job_id = check_job_id(job_id)
        text = jsonvalues.check_object(value, column)
        if column == "metadata":
            jsonvalues.check_auth_id(value, column, merge=not replace)
        version = None
        if etag:
            parsed = version_of(etag)
            version = parsed if parsed is not None else -1
        outcome = self._sql.update_json(job_id, column, value, text, not replace, version, self.rows.clock.now())
        if outcome is None:
            with self.db.read_engine.connect() as conn:
                raise_missing_or_stale(conn, job_id, etag, of_metadata=column == "metadata")
        if isinstance(outcome, int):
            raise InvalidArgument(
                Reason.METADATA_TOO_LARGE, f"{column} would be {outcome} bytes after the merge; the limit is "
                f"{jsonvalues.MAX_JSON_BYTES} bytes (64 KiB); nothing was written", column)
        assert outcome is not None
        self.notifier.notify(job_id)
        return Job.from_row(outcome)

    def update_progress(self, job_id: str, current: int, total: int) -> Job:
        job_id = check_job_id(job_id)
        if current < 0 or total < 0:
            raise InvalidArgument(Reason.INVALID_PROGRESS, "progress counters cannot be negative", "progress_current")
        with self.db.write_engine.begin() as conn:
            job = self.rows.conditional_update(conn, job_id, "", {"progress_current": current,
                                                                  "progress_total": total})
        self.notifier.notify(job_id)
        return job

    def update_status(self, job_id: str, status: JobStatus, *, error: str = "", error_reason: str = "",
                      result: dict[str, Any] | None = None, etag: str = "") -> Job:
        job_id = check_job_id(job_id)
        check_text(error_reason, "error_reason", MAX_ERROR_REASON_CHARS)
        if result is not None:
            jsonvalues.check_object(result, "result")
        with self.db.write_engine.begin() as conn:
            job = self.rows.select_for_update(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if _repeats(job, status, error, error_reason, result):
                return job  # a retry of the write that put the job here (e.g. after a dropped connection)
            check_transition(job, status)
            changed: set[str] = set()
            updated = self.lifecycle.set_status(conn, job, status, etag=etag, error=error, error_reason=error_reason,
                                                result=result, changed=changed)
        self.notifier.notify(*changed)
        return updated

    def add_log(self, job_id: str, level: int, message: str) -> JobLog:
        job_id = check_job_id(job_id)
        if level not in LOG_LEVELS:
            level = 2
        if not message.strip():
            raise InvalidArgument(Reason.EMPTY_LOG_MESSAGE, "message is empty", "message")
        message = without_nul(message)
        if len(message) > MAX_LOG_MESSAGE:
            message = message[:MAX_LOG_MESSAGE] + "…"
        row = {"job_id": job_id, "level": level, "message": message, "created_at": self.rows.clock.now()}
        try:
            with self.db.write_engine.begin() as conn:
                log_id = conn.execute(sa.insert(job_logs).values(row).returning(job_logs.c.id)).scalar_one()
        except sa.exc.IntegrityError:
            raise JobNotFound(job_id) from None
        return JobLog.from_row({**row, "id": log_id})



def _digest(*parts: str) -> str:
    """SHA-256 of the parts (NUL-separated): the stored form of scoped request ids and request fingerprints."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _repeats(job: Job, status: JobStatus, error: str, error_reason: str, result: dict[str, Any] | None) -> bool:
    """Whether an UpdateJobStatus asks for exactly what the job already is: an idempotent no-op."""
    return (job.status == status and status.terminal and error in ("", job.error)
            and error_reason in ("", job.error_reason) and (result is None or result == job.result))
