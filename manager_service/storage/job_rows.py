"""Low-level job writes the stores share: new rows, the conditional UPDATE ... RETURNING (statements
built once), the parent's lock and counters, and inserting deduplicated children."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.errors import Aborted, JobNotFound, Reason
from quaero.job_status import JobStatus

from .clock import Clock
from .jobs_sql import JobsSql
from .models import jobs
from .records import MAX_NAME_CHARS, MAX_TYPE_CHARS, ChildSpec, CreatedChildren, DocumentCounts, Job, dedup_key_of, version_of

# Built once and executed with parameters: building a Core statement per call cost more than running
# it (measured at store level: a read 117 -> 57 us, an update 383 -> 99 us).
SELECT_JOB_FOR_UPDATE = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id")).with_for_update()
# Several jobs locked in one statement, in id order (so that two transactions never wait on each other
# in a circle).
SELECT_JOBS_FOR_UPDATE = (sa.select(jobs).where(jobs.c.id.in_(sa.bindparam("job_ids", expanding=True)))
                          .order_by(jobs.c.id).with_for_update())
# One UPDATE of the parent per finished child: built once, returning only what the lifecycle decides by.
BUMP_PARENT = (sa.update(jobs).where(jobs.c.id == sa.bindparam("b_parent_id"))
               .values(progress_total=jobs.c.progress_total + sa.bindparam("created"),
                       progress_current=jobs.c.progress_current + sa.bindparam("finished"),
                       children_failed=jobs.c.children_failed + sa.bindparam("failed"),
                       docs_new=jobs.c.docs_new + sa.bindparam("docs_new"),
                       docs_changed=jobs.c.docs_changed + sa.bindparam("docs_changed"),
                       docs_unchanged=jobs.c.docs_unchanged + sa.bindparam("docs_unchanged"),
                       version=jobs.c.version + 1, updated_at=sa.bindparam("stamp", type_=jobs.c.updated_at.type))
               .returning(jobs.c.id, jobs.c.status, jobs.c.progress_current, jobs.c.progress_total,
                          jobs.c.children_failed))
# Children: which dedup keys a parent already has (only when the new ones might not all fit), and the rows.
KNOWN_DEDUP_KEYS = sa.select(jobs.c.dedup_key).where(
    jobs.c.parent_id == sa.bindparam("k_parent_id"), jobs.c.dedup_key.in_(sa.bindparam("keys", expanding=True)))
INSERT_JOBS = sa.insert(jobs)
NO_DOCUMENTS = DocumentCounts()
ROW_DEFAULTS: dict[str, Any] = {column.name: None for column in jobs.c} | {
    "progress_current": 0, "progress_total": 0, "children_failed": 0, "error": "", "error_reason": "", "attempts": 0,
    "docs_new": 0, "docs_changed": 0, "docs_unchanged": 0, "docs_gone": 0}


@dataclass(frozen=True)
class ParentCounters:
    id: str
    status: JobStatus
    progress_current: int
    progress_total: int
    children_failed: int


class JobRows:
    def __init__(self, clock: Clock, sql: JobsSql) -> None:
        self.clock = clock
        self.sql = sql

    @staticmethod
    def new_row(parent_id: str | None, type: str, name: str, config: dict[str, Any], metadata: dict[str, Any],
                depth: int, stamp: datetime) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()), "parent_id": parent_id, "type": type, "name": name,
            "status": JobStatus.PENDING.value, "config": config, "metadata": metadata, "result": {}, "depth": depth,
            "version": 1, "metadata_version": 1, "created_at": stamp, "updated_at": stamp,
        }

    @staticmethod
    def mark_run(conn: Connection, row: dict[str, Any], definition_id: str) -> None:
        """A new top-level row is a run of the definition: its id, and the run before it (the newest completed
        one), which its pages are counted gone against."""
        row["definition_id"] = definition_id[:128]
        row["previous_run_id"] = conn.execute(
            sa.select(jobs.c.id).where(jobs.c.definition_id == row["definition_id"], jobs.c.parent_id.is_(None),
                                       jobs.c.status == JobStatus.COMPLETED.value)
            .order_by(jobs.c.created_at.desc()).limit(1)).scalar()

    def select_for_update(self, conn: Connection, job_id: str) -> Job | None:
        row = conn.execute(SELECT_JOB_FOR_UPDATE, {"job_id": job_id}).mappings().first()
        return Job.from_row(row) if row is not None else None

    def select_many_for_update(self, conn: Connection, job_ids: Iterable[str]) -> dict[str, Job]:
        wanted = sorted(set(job_ids))
        if not wanted:
            return {}
        rows = conn.execute(SELECT_JOBS_FOR_UPDATE, {"job_ids": wanted}).mappings()
        return {job.id: job for job in map(Job.from_row, rows)}

    def lock_parent(self, conn: Connection, parent_id: str) -> Job:
        # FOR UPDATE serialises the children bookkeeping of one parent on PostgreSQL; SQLite has a
        # single writer already.
        parent = self.select_for_update(conn, parent_id)
        if parent is None:
            raise JobNotFound(parent_id, "parent_id", "parent job")
        return parent

    def conditional_update(self, conn: Connection, job_id: str, etag: str, values: Mapping[str, Any]) -> Job:
        """UPDATE ... RETURNING in one statement, conditional on the etag when one is given."""
        version = None
        if etag:
            parsed = version_of(etag)
            version = parsed if parsed is not None else -1
        row = self.sql.update_row(conn, job_id, values, self.clock.now(), version)
        if row is not None:
            return Job.from_row(row)
        raise_missing_or_stale(conn, job_id, etag)

    def bump_parent(self, conn: Connection, parent_id: str, *, created: int = 0, finished: int = 0,
                    failed: int = 0, documents: DocumentCounts = NO_DOCUMENTS) -> ParentCounters:
        """Moves the parent's counters (in the same transaction as the child's own change: no recount, no
        drift). Returns the counters and status only: the parent's objects are read when a decision
        needs them (Lifecycle), not on every page."""
        row = conn.execute(BUMP_PARENT, {"b_parent_id": parent_id, "created": created, "finished": finished,
                                         "failed": failed, "stamp": self.clock.now(), "docs_new": documents.new,
                                         "docs_changed": documents.changed,
                                         "docs_unchanged": documents.unchanged}).one()
        return ParentCounters(row[0], JobStatus(row[1]), row[2], row[3], row[4])

    def insert_children(self, conn: Connection, parent: Job, specs: Iterable[ChildSpec], max_children: int,
                        bump_parent: bool = True) -> CreatedChildren:
        """Children not seen before under this parent (by dedup key), within max_children in all."""
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
        room = max_children - parent.progress_total if max_children > 0 else len(unique)
        stamp = self.clock.now()
        rows: list[dict[str, Any]] = []
        if len(unique) <= room:
            # Every new key fits: one INSERT ... ON CONFLICT DO NOTHING (the parent's unique dedup key)
            # says which were new; no SELECT first. This is the path of nearly every page.
            rows = [self._child_row(parent.id, spec, key, stamp, index) for index, (key, spec) in enumerate(unique.items())]
            inserted = self.sql.insert_new(conn, rows)
            result.duplicates += len(rows) - len(inserted)
            rows = [row for row in rows if row["dedup_key"] in inserted]
        else:
            known: set[str] = set()
            keys = list(unique)
            for start in range(0, len(keys), 500):
                known.update(conn.execute(KNOWN_DEDUP_KEYS, {"k_parent_id": parent.id,
                                                             "keys": keys[start:start + 500]}).scalars())
            for key, spec in unique.items():
                if key in known:
                    result.duplicates += 1
                elif len(rows) >= room:
                    result.over_limit += 1
                else:
                    rows.append(self._child_row(parent.id, spec, key, stamp, len(rows)))
            if rows:
                conn.execute(INSERT_JOBS, rows)
        if rows:
            if bump_parent:
                self.bump_parent(conn, parent.id, created=len(rows))
            result.jobs = [Job.from_row(ROW_DEFAULTS | row) for row in rows]
        return result

    def _child_row(self, parent_id: str, spec: ChildSpec, key: str, stamp: datetime, index: int) -> dict[str, Any]:
        # A microsecond apart, so that children are leased in the order they were discovered.
        name = spec.name if len(spec.name) <= MAX_NAME_CHARS else spec.name[:MAX_NAME_CHARS - 1] + "…"
        row = self.new_row(parent_id, spec.type[:MAX_TYPE_CHARS], name, spec.config, {}, spec.depth,
                           stamp + timedelta(microseconds=index))
        row["dedup_key"] = key
        return row


def raise_missing_or_stale(conn: Connection, job_id: str, etag: str, of_metadata: bool = False) -> NoReturn:
    """After a conditional write matched nothing: NOT_FOUND, or ABORTED for a stale etag (the job's, or
    with of_metadata its metadata_etag)."""
    column = jobs.c.metadata_version if of_metadata else jobs.c.version
    exists = conn.execute(sa.select(column).where(jobs.c.id == job_id)).first()
    if exists is None:
        raise JobNotFound(job_id)
    what = "its metadata" if of_metadata else "it"
    name = "metadata_etag" if of_metadata else "etag"
    raise Aborted(Reason.ETAG_MISMATCH, f"job {job_id}: {what} changed since {name} {etag!r} was read (now "
                  f"{exists[0]!s}); read the job again and retry", "etag", {"job_id": job_id, "etag": str(exists[0])})
