"""Deleting runs: DeleteJob for one run, and the background prune that keeps each definition's newest
runs (keep_runs, keep_days; the manager's default otherwise). A run goes in bounded batches, each its own
short transaction (documents, then children with their logs, then the run): readers and the crawl's
writes go on between them, and a delete cut short (a killed manager) is finished by the next one. A
document's content goes with the last document that refers to it; the URL's version before becomes its
latest again. Never touched by the prune: a run still going, and the newest completed run of a definition."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.crawl_spec import RunPolicy
from quaero.errors import FailedPrecondition, InvalidArgument, JobNotFound, Reason
from quaero.ids import check_job_id
from quaero.job_status import JobStatus

from ..notifier import ChangeNotifier
from .db import PRUNE_LOCK, Database
from .job_rows import JobRows
from .lifecycle import Lifecycle
from .models import contents, documents, job_definitions, job_logs, jobs, run_cookies, run_sessions
from .search import SearchIndex

log = logging.getLogger("quaero.manager.retention")
BATCH = 250  # rows per transaction
# Between batches the prune waits as long as the batch took (at least PAUSE_SECONDS): it takes at most half
# of the time, so the crawl's writes and every read (GetJob) keep their pace while a big run goes.
PAUSE_SECONDS = 0.005
DEFAULT_KEEP_RUNS = 30
TERMINAL = tuple(status.value for status in JobStatus if status.terminal)


@dataclass
class Deleted:
    jobs: int = 0
    logs: int = 0
    documents: int = 0
    contents: int = 0
    runs: list[str] = field(default_factory=list)

    def add(self, other: Deleted) -> None:
        self.jobs += other.jobs
        self.logs += other.logs
        self.documents += other.documents
        self.contents += other.contents
        self.runs += other.runs


class Retention:
    def __init__(self, db: Database, rows: JobRows, lifecycle: Lifecycle, index: SearchIndex,
                 notifier: ChangeNotifier, default_keep_runs: int = DEFAULT_KEEP_RUNS) -> None:
        self.db = db
        self.rows = rows
        self.lifecycle = lifecycle
        self.index = index
        self.notifier = notifier
        self.default_keep_runs = default_keep_runs

    # ---- one run --------------------------------------------------------------------------------
    def delete_run(self, run_id: str, cancel: bool) -> Deleted:
        run_id = check_job_id(run_id)
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            run = self.rows.select_for_update(conn, run_id)
            if run is None:
                raise JobNotFound(run_id)
            if run.parent_id is not None:
                raise InvalidArgument(Reason.NOT_A_RUN, f"job {run_id} is a page of run {run.parent_id}; DeleteJob "
                                      "deletes whole runs (top-level jobs)", "job_id")
            if not run.status.terminal:
                if not cancel:
                    raise FailedPrecondition(Reason.RUN_STILL_RUNNING, f"run {run_id} is {run.status}; cancel it "
                                             "first, or ask DeleteJob to (cancel = true; `quaero jobs rm --cancel`)",
                                             "job_id", {"job_id": run_id, "status": str(run.status)})
                self.lifecycle.set_status(conn, run, JobStatus.CANCELLED, error="cancelled to be deleted",
                                          error_reason=Reason.CANCELLED_BY_USER, changed=changed)
        self.notifier.notify(*changed)
        deleted = self._purge(run_id)
        self._give_space_back()
        return deleted

    def _give_space_back(self) -> None:
        self.index.compact()
        self.db.reclaim()

    def _purge(self, run_id: str) -> Deleted:
        deleted = Deleted(runs=[run_id])
        while self._batch(lambda conn: self._documents_batch(conn, run_id, deleted)):
            pass
        while self._batch(lambda conn: self._children_batch(conn, run_id, deleted)):
            pass
        with self.db.write_engine.begin() as conn:
            deleted.logs += conn.execute(sa.delete(job_logs).where(job_logs.c.job_id == run_id)).rowcount
            conn.execute(sa.delete(run_cookies).where(run_cookies.c.parent_job_id == run_id))
            conn.execute(sa.delete(run_sessions).where(run_sessions.c.parent_job_id == run_id))
            conn.execute(sa.update(jobs).where(jobs.c.previous_run_id == run_id).values(previous_run_id=None))
            deleted.jobs += conn.execute(sa.delete(jobs).where(jobs.c.id == run_id)).rowcount
        self.notifier.notify(run_id)
        log.info("event=run_deleted run=%s jobs=%d documents=%d contents=%d", run_id, deleted.jobs,
                 deleted.documents, deleted.contents)
        return deleted

    def _batch(self, work: Any) -> bool:
        """One batch in its own transaction, then a pause as long as it took; False when it found nothing."""
        began = time.monotonic()
        with self.db.write_engine.begin() as conn:
            found = bool(work(conn))
        if found:
            time.sleep(max(PAUSE_SECONDS, time.monotonic() - began))
        return found

    def _documents_batch(self, conn: Connection, run_id: str, deleted: Deleted) -> int:
        rows = conn.execute(sa.select(documents.c.id, documents.c.content_id, documents.c.definition_id,
                                      documents.c.url_hash, documents.c.latest)
                            .where(documents.c.parent_job_id == run_id).limit(BATCH)).all()
        if not rows:
            return 0
        conn.execute(sa.delete(documents).where(documents.c.id.in_([row.id for row in rows])))
        deleted.documents += len(rows)
        # The version before becomes the URL's latest again (where this run held it): one read and one write
        # per batch and definition.
        held: dict[str, set[str]] = {}
        for row in rows:
            if row.latest and row.definition_id:
                held.setdefault(row.definition_id, set()).add(row.url_hash)
        for definition_id, hashes in held.items():
            newest: dict[str, tuple[Any, str]] = {}
            for doc_id, hashed, fetched in conn.execute(
                    sa.select(documents.c.id, documents.c.url_hash, documents.c.fetched_at).where(
                        documents.c.definition_id == definition_id, documents.c.url_hash.in_(sorted(hashes)))):
                if hashed not in newest or (fetched, doc_id) > newest[hashed]:
                    newest[hashed] = (fetched, doc_id)
            if newest:
                conn.execute(sa.update(documents).where(documents.c.id.in_([doc_id for _f, doc_id in newest.values()]))
                             .values(latest=True))
        # Contents no document refers to any more go, with their search entries.
        candidates = sorted({row.content_id for row in rows})
        orphans = conn.execute(sa.select(contents.c.id, contents.c.title, contents.c.text).where(
            contents.c.id.in_(candidates),
            ~sa.exists().where(documents.c.content_id == contents.c.id))).all()
        if orphans:
            self.index.remove(conn, [(row.id, row.title, row.text) for row in orphans])
            conn.execute(sa.delete(contents).where(contents.c.id.in_([row.id for row in orphans])))
            deleted.contents += len(orphans)
        return len(rows)

    def _children_batch(self, conn: Connection, run_id: str, deleted: Deleted) -> int:
        ids = list(conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == run_id).limit(BATCH)).scalars())
        if not ids:
            return 0
        deleted.logs += conn.execute(sa.delete(job_logs).where(job_logs.c.job_id.in_(ids))).rowcount
        deleted.jobs += conn.execute(sa.delete(jobs).where(jobs.c.id.in_(ids))).rowcount
        return len(ids)

    # ---- the background prune -------------------------------------------------------------------
    def due(self, now: datetime) -> list[str]:
        """Runs past their definition's retention, oldest first: beyond its newest keep_runs, or finished
        more than keep_days ago. Only finished runs of a definition; never its newest completed run."""
        with self.db.read_engine.connect() as conn:
            policies = {row.id: _policy(row.spec) for row in conn.execute(
                sa.select(job_definitions.c.id, job_definitions.c.spec))}
            runs = conn.execute(
                sa.select(jobs.c.id, jobs.c.definition_id, jobs.c.status, jobs.c.finished_at)
                .where(jobs.c.parent_id.is_(None), jobs.c.definition_id.is_not(None))
                .order_by(jobs.c.definition_id, jobs.c.created_at.desc(), jobs.c.id.desc())).all()
        due: list[tuple[datetime, str]] = []
        seen: dict[str, int] = {}
        newest_completed: set[str] = set()
        for run in runs:
            policy = policies.get(run.definition_id, RunPolicy())
            keep = policy.keep_runs or self.default_keep_runs
            position = seen.get(run.definition_id, 0)
            seen[run.definition_id] = position + 1
            if run.status not in TERMINAL:
                continue
            if run.status == JobStatus.COMPLETED.value and run.definition_id not in newest_completed:
                newest_completed.add(run.definition_id)
                continue
            too_old = bool(policy.keep_days and run.finished_at is not None
                           and run.finished_at < now - timedelta(days=policy.keep_days))
            if position >= keep or too_old:
                due.append((run.finished_at or now, run.id))
        return [run_id for _finished, run_id in sorted(due)]

    def prune(self, now: datetime, most: int = 10) -> Deleted:
        """Deletes up to `most` runs past retention; one manager at a time on PostgreSQL (advisory lock)."""
        total = Deleted()
        with self.db.turn(PRUNE_LOCK) as mine:
            if mine is None:
                return total
            for run_id in self.due(now)[:most]:
                total.add(self._purge(run_id))
        if total.runs:
            self._give_space_back()
        return total


def _policy(spec: Any) -> RunPolicy:
    try:
        return RunPolicy.from_mapping(spec or {})
    except InvalidArgument:
        return RunPolicy()
