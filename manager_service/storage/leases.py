"""Leases: how executors claim pending children (FOR UPDATE SKIP LOCKED on PostgreSQL, the single writer
on SQLite), keep them (renew), finish them (the page's document, its discovered children and the
parent's counters in one transaction) or give them back for a retry, and how the pages of an executor
that died return to pending. Knows nothing of gRPC."""
from __future__ import annotations

import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.cookies.session import SessionCookie, newest_per_key
from quaero.errors import InvalidArgument, JobNotFound, LeaseLost, QuaeroError, Reason
from quaero.ids import check_job_id
from quaero.job_status import JobStatus
from quaero.limits import MAX_DOCUMENT_URL_CHARS, without_nul

from ..notifier import ChangeNotifier
from . import jsonvalues
from .db import Database
from .documents import Basis, DocumentStore, LatestVersions
from .job_rows import JobRows
from .lifecycle import MAX_ERROR_CHARS, Lifecycle
from .models import PENDING_CHILD, jobs
from .records import (
    MAX_TYPE_CHARS,
    ChildSpec,
    Completion,
    DocumentCounts,
    DocumentInput,
    Job,
    PreviousVersion,
    check_children,
    check_text,
)
from .sessions import SessionStore, check_session_cookies

MAX_LEASE_ATTEMPTS = 5
MAX_WORKER_ID_CHARS = 128
MAX_LEASE_TOKEN_CHARS = 64
MAX_ERROR_REASON_CHARS = 64
MAX_LEASED_AT_ONCE = 100
MAX_RETRY_AFTER = timedelta(hours=1)
MAX_COMPLETIONS_AT_ONCE = 100
# lease() returns expired leases to pending first, at most this often (it was a query per call; a lease
# expires after 30 s by default, so a second more is nothing).
EXPIRE_EVERY = timedelta(seconds=1)
PENDING, RUNNING = JobStatus.PENDING.value, JobStatus.RUNNING.value


@dataclass(frozen=True)
class LeaseRequest:
    worker_id: str
    max_jobs: int
    duration: timedelta
    type: str


@dataclass
class _Tally:
    finished: int = 0
    failed: int = 0
    created: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class _Parents:
    """The parents of one call's completions: rows locked so far, and what their counters owe."""
    locked: dict[str, Job] = field(default_factory=dict)
    tallies: dict[str, _Tally] = field(default_factory=dict)
    # What the call's pages set, by run: the newest of each cookie, written once per run at the end.
    sessions: dict[str, dict[tuple[str, str, str], SessionCookie]] = field(default_factory=dict)
    # The children that end (completed or failed), as they will be: written in one statement at the end.
    ended: list[Job] = field(default_factory=list)

    def tally(self, parent_id: str, created: int, failed: bool, kind: str) -> None:
        tally = self.tallies.setdefault(parent_id, _Tally())
        tally.finished += 1
        tally.failed += int(failed)
        tally.created += created
        if kind:
            tally.kinds[kind] += 1


def _lease_statement(of_type: bool) -> Any:
    """UPDATE ... RETURNING of the oldest pending children (FOR UPDATE SKIP LOCKED: concurrent leases on
    PostgreSQL take different rows), built once: building it per call cost more than running it."""
    now = sa.bindparam("l_now", type_=jobs.c.updated_at.type)
    # The state is written into the SQL, not bound: a partial index can serve only a query whose text
    # implies its condition (SQLite, and PostgreSQL's generic plans of prepared statements).
    candidates = sa.select(jobs.c.id).where(
        sa.text(PENDING_CHILD),
        sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now))
    if of_type:
        candidates = candidates.where(jobs.c.type == sa.bindparam("l_type"))
    candidates = candidates.order_by(jobs.c.created_at, jobs.c.id).limit(sa.bindparam("l_limit")).with_for_update(
        skip_locked=True)
    return (sa.update(jobs).where(jobs.c.id.in_(candidates.scalar_subquery()))
            .values(status=RUNNING, lease_token=sa.bindparam("l_token"), lease_owner=sa.bindparam("l_owner"),
                    lease_expires_at=sa.bindparam("l_until", type_=jobs.c.lease_expires_at.type),
                    started_at=sa.func.coalesce(jobs.c.started_at, now), attempts=jobs.c.attempts + 1,
                    not_before=None, version=jobs.c.version + 1, updated_at=now)
            .returning(*jobs.c))


LEASE_OF_TYPE, LEASE_ANY = _lease_statement(True), _lease_statement(False)


def plan_lease(conn: Connection) -> None:
    """Makes PostgreSQL lease through ix_jobs_pending in order whatever its statistics say. On a table it
    has no statistics for (a big run just created, autovacuum off or not yet around), it guessed a handful of
    pending rows, read every one of them and sorted them: 13 ms a lease at 20,000 pending, growing with the
    queue, against 0.3 ms walking the index. With sorting ruled out for this transaction, that index is its
    only way to the order (SQLite takes it anyway)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_sort = off")


class LeaseQueue:
    def __init__(self, db: Database, rows: JobRows, lifecycle: Lifecycle, documents: DocumentStore,
                 notifier: ChangeNotifier, sessions: SessionStore) -> None:
        self.db = db
        self.sessions = sessions
        self.rows = rows
        self.lifecycle = lifecycle
        self.documents = documents
        self.notifier = notifier
        self._expired_at: datetime | None = None  # when lease() last returned expired leases to pending
        self._definitions: OrderedDict[str, str] = OrderedDict()  # run -> its definition (never changes)

    def run_definitions(self, conn: Connection, run_ids: Iterable[str]) -> dict[str, str]:
        """The job definition of each run ('' for none), remembered: a run's definition never changes."""
        wanted = set(run_ids)
        missing = [run_id for run_id in wanted if run_id not in self._definitions]
        if missing:
            for run_id, definition_id in conn.execute(
                    sa.select(jobs.c.id, jobs.c.definition_id).where(jobs.c.id.in_(missing))):
                self._definitions[run_id] = definition_id or ""
            while len(self._definitions) > 4096:
                self._definitions.popitem(last=False)
        return {run_id: self._definitions.get(run_id, "") for run_id in wanted}

    def previous_versions(self, leased: Sequence[Job]) -> dict[str, PreviousVersion]:
        """The latest stored version of each leased page's URL in its run's definition, by job id."""
        by_run: dict[str, list[Job]] = {}
        for job in leased:
            if job.parent_id and isinstance(job.config.get("url"), str):
                by_run.setdefault(job.parent_id, []).append(job)
        found: dict[str, PreviousVersion] = {}
        if not by_run or all(self._definitions.get(run_id) == "" for run_id in by_run):
            return found  # (runs known to have no definition: no read at all, as before recrawls existed)
        with self.db.read_engine.connect() as conn:
            definitions = self.run_definitions(conn, by_run)
            for run_id, children in by_run.items():
                versions = self.documents.previous_versions(conn, definitions[run_id],
                                                            [job.config["url"] for job in children])
                for job in children:
                    if job.config["url"] in versions:
                        found[job.id] = versions[job.config["url"]]
        return found

    @staticmethod
    def check_lease(worker_id: str, max_jobs: int, duration: timedelta, type: str,
                    field: str = "") -> tuple[int, float]:
        """A lease request's (max_jobs, seconds), as lease() takes them; InvalidArgument (at `field`.name)
        otherwise."""
        prefix = f"{field}." if field else ""
        check_text(worker_id, f"{prefix}worker_id", MAX_WORKER_ID_CHARS)
        check_text(type, f"{prefix}type", MAX_TYPE_CHARS, Reason.TYPE_TOO_LONG)
        seconds = duration.total_seconds() or 30.0
        if not 1 <= seconds <= 600:
            raise InvalidArgument(Reason.INVALID_LEASE_DURATION, "lease_duration must be between 1 s and 10 min",
                                  f"{prefix}lease_duration")
        return max(1, min(max_jobs or 1, MAX_LEASED_AT_ONCE)), seconds

    def lease(self, worker_id: str, max_jobs: int, duration: timedelta, type: str) -> tuple[list[Job], str]:
        request = LeaseRequest(worker_id, max_jobs, duration, type)
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            leased = self._lease_in(conn, request, self.rows.clock.now(), changed)
        self.notifier.notify(*changed)
        return leased

    def _lease_in(self, conn: Connection, request: LeaseRequest, stamp: datetime,
                  changed: set[str]) -> tuple[list[Job], str]:
        """The lease inside the caller's transaction (alone, or after a batch of completions)."""
        max_jobs, seconds = self.check_lease(request.worker_id, request.max_jobs, request.duration, request.type)
        token = secrets.token_hex(16)
        if self._expired_at is None or stamp - self._expired_at >= EXPIRE_EVERY:
            self._expire(conn, stamp, changed)
            self._expired_at = stamp
        plan_lease(conn)
        rows = [Job.from_row(row) for row in conn.execute(LEASE_OF_TYPE if request.type else LEASE_ANY, {
            "l_type": request.type, "l_limit": max_jobs, "l_now": stamp, "l_token": token,
            "l_owner": request.worker_id, "l_until": stamp + timedelta(seconds=seconds)}).mappings()]
        changed.update(job.id for job in rows)
        return rows, token

    def unlease(self, job_ids: Sequence[str], token: str) -> None:
        """Jobs just leased with `token` that the answer has no room for: back to pending, uncounted."""
        with self.db.write_engine.begin() as conn:
            back = self._back_to_pending(conn, sa.and_(jobs.c.id.in_(job_ids), jobs.c.lease_token == token,
                                                       jobs.c.status == RUNNING), self.rows.clock.now())
        self.notifier.notify(*back)

    def _back_to_pending(self, conn: Connection, condition: Any, stamp: datetime) -> list[str]:
        """Leased jobs back to pending as if never leased: the attempt is not counted, the token stops holding."""
        attempts = (sa.func.greatest if self.db.dialect == "postgresql" else sa.func.max)(jobs.c.attempts - 1, 0)
        return list(conn.execute(
            sa.update(jobs).where(condition)
            .values(status=PENDING, lease_token=None, lease_owner=None, lease_expires_at=None, attempts=attempts,
                    version=jobs.c.version + 1, updated_at=stamp).returning(jobs.c.id)).scalars())

    def release(self, worker_id: str) -> int:
        """Every job leased to worker_id back to pending now (its restart or its shutdown), the attempt not
        counted; the old tokens stop holding."""
        check_text(worker_id, "worker_id", MAX_WORKER_ID_CHARS)
        if not worker_id:
            raise InvalidArgument(Reason.INVALID_WORKER_ID, "worker_id is required", "worker_id")
        with self.db.write_engine.begin() as conn:
            released = self._back_to_pending(conn, sa.and_(jobs.c.status == RUNNING, jobs.c.lease_owner == worker_id),
                                             self.rows.clock.now())
        self.notifier.notify(*released)
        return len(released)

    def expire(self) -> int:
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            count = self._expire(conn, self.rows.clock.now(), changed)
        self.notifier.notify(*changed)
        return count

    def _expire(self, conn: Connection, stamp: datetime, changed: set[str]) -> int:
        # An executor that stopped renewing (killed, partitioned) gives its jobs back to pending; a job
        # whose every attempt ended that way (it kills or hangs its executor) fails instead of
        # cycling forever.
        expired = conn.execute(
            sa.select(jobs.c.id, jobs.c.attempts).where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < stamp)
            .with_for_update(skip_locked=True)).all()
        retry = [job_id for job_id, attempts in expired if attempts < MAX_LEASE_ATTEMPTS]
        changed.update(retry)
        if retry:
            conn.execute(
                sa.update(jobs).where(jobs.c.id.in_(retry))
                .values(status=PENDING, lease_token=None, lease_owner=None, lease_expires_at=None,
                        version=jobs.c.version + 1, updated_at=stamp))
        for job_id, attempts in expired:
            if attempts >= MAX_LEASE_ATTEMPTS:
                job = self.rows.select_for_update(conn, job_id)
                assert job is not None
                self.lifecycle.set_status(
                    conn, job, JobStatus.FAILED, error_reason=Reason.LEASE_ATTEMPTS_EXHAUSTED,
                    error=f"gave up after {attempts} attempts: each time the lease expired before the job finished "
                          "(its executor stopped or hung on it)", changed=changed)
        return len(expired)

    def renew(self, job_id: str, token: str, duration: timedelta) -> Job:
        job_id = check_job_id(job_id)
        check_text(token, "lease_token", MAX_LEASE_TOKEN_CHARS)
        seconds = min(max(duration.total_seconds() or 30.0, 1), 600)
        with self.db.write_engine.begin() as conn:
            row = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token, jobs.c.status == RUNNING)
                .values(lease_expires_at=self.rows.clock.now() + timedelta(seconds=seconds))
                .returning(*jobs.c)).mappings().first()
        if row is None:
            self._raise_lost(job_id, "it expired or the job was cancelled")
        return Job.from_row(row)

    def complete(self, job_id: str, token: str, status: JobStatus, *, result: dict[str, Any], error: str,
                 error_reason: str, document: DocumentInput | None, children: Sequence[ChildSpec], max_children: int,
                 retry_after: timedelta = timedelta(0)) -> Job:
        """Finishes a leased child in one transaction: document, discovered children, status, parent.
        PENDING gives it back instead, to be leased again after retry_after."""
        return self.record(Completion(job_id, token, status, result, error, error_reason, document, children,
                                      max_children, retry_after))

    def record(self, completion: Completion) -> Job:
        """One completion alone (complete_many of one); its error is raised."""
        [outcome], _ = self.complete_many([completion])
        if isinstance(outcome, QuaeroError):
            raise outcome
        return outcome

    def complete_many(self, completions: Sequence[Completion],
                      lease_next: LeaseRequest | None = None) -> tuple[list[Job | QuaeroError], tuple[list[Job], str]]:
        """Several completions in one transaction, each as `complete` would record it alone; an error that
        concerns one completion (invalid, not found, lease lost) is its outcome and writes nothing of it.
        Every such error is found before the completion's first write, so the others are unaffected.
        lease_next: then the next jobs are leased in the same transaction (one commit for the worker's loop:
        on PostgreSQL, one WAL flush instead of two). Returns the outcomes and what was leased."""
        if lease_next is not None:  # (refused before anything is recorded)
            self.check_lease(lease_next.worker_id, lease_next.max_jobs, lease_next.duration, lease_next.type,
                             "lease_next")
        if len(completions) > MAX_COMPLETIONS_AT_ONCE:
            raise InvalidArgument(Reason.TOO_MANY_COMPLETIONS, f"at most {MAX_COMPLETIONS_AT_ONCE} completions per "
                                  "call", "completions")
        outcomes: list[Job | QuaeroError | None] = []  # None: valid, to be recorded
        seen: set[str] = set()
        for completion in completions:
            try:
                self._check(completion)
                if completion.job_id in seen:
                    raise InvalidArgument(Reason.DUPLICATE_COMPLETION, f"job {completion.job_id} is completed more "
                                          "than once in this call", "job_id")
                seen.add(completion.job_id)
                outcomes.append(None)
            except QuaeroError as refused:
                outcomes.append(refused)
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            stamp = self.rows.clock.now()
            # The jobs that end are locked in one statement, before any parent (one lock order for all).
            held = self.rows.select_many_for_update(conn, [
                c.job_id for c, outcome in zip(completions, outcomes, strict=True)
                if outcome is None and c.status != PENDING])
            parents = _Parents()
            definitions = self.run_definitions(conn, {
                job.parent_id for job in held.values() if job.parent_id})
            known = self.documents.latest_of(conn, [
                (definitions.get(held[c.job_id].parent_id or "", ""), c.document.url)
                for c, outcome in zip(completions, outcomes, strict=True)
                if outcome is None and c.document is not None and c.job_id in held])
            for index, completion in enumerate(completions):
                if outcomes[index] is None:
                    try:
                        outcomes[index] = self._record(conn, completion, held.get(completion.job_id), stamp,
                                                       parents, changed, definitions, known)
                    except (JobNotFound, LeaseLost, InvalidArgument) as refused:
                        outcomes[index] = refused
            self.lifecycle.end_children(conn, parents.ended, stamp, changed)
            # Each run's session takes what this call's pages set in one write, and each parent's counters
            # move once for all of its children in this call.
            for parent_id, cookies in parents.sessions.items():
                parent = parents.locked.get(parent_id) or self.rows.lock_parent(conn, parent_id)
                self.sessions.record(conn, parent, list(cookies.values()), stamp)
            for parent_id, tally in parents.tallies.items():
                kinds = tally.kinds
                self.lifecycle.children_finished(conn, parent_id, finished=tally.finished, failed=tally.failed,
                                                 created=tally.created, changed=changed, documents=DocumentCounts(
                                                     kinds["new"], kinds["changed"], kinds["unchanged"]))
            leased: tuple[list[Job], str] = ([], "")
            if lease_next is not None:
                leased = self._lease_in(conn, lease_next, stamp, changed)
        self.notifier.notify(*changed)
        return [outcome for outcome in outcomes if outcome is not None], leased  # (all are set by now)

    @staticmethod
    def _check(completion: Completion) -> None:
        """Everything about a completion that needs no database (InvalidArgument otherwise); its job_id
        becomes the canonical spelling."""
        completion.job_id = check_job_id(completion.job_id)
        check_text(completion.token, "lease_token", MAX_LEASE_TOKEN_CHARS)
        check_text(completion.error_reason, "error_reason", MAX_ERROR_REASON_CHARS)
        check_session_cookies(completion.session_cookies, "session_cookies")
        if completion.status == PENDING:
            if completion.retry_after < timedelta(0) or completion.retry_after > MAX_RETRY_AFTER:
                raise InvalidArgument(Reason.INVALID_RETRY_AFTER, "retry_after must be between 0 and 1 hour",
                                      "retry_after")
            return
        if not completion.status.terminal:
            raise InvalidArgument(Reason.INVALID_STATUS, "a leased job completes as completed, failed or cancelled, "
                                  "or goes back to pending for a retry", "status")
        jsonvalues.check_object(completion.result, "result")
        check_children(completion.children, "children")
        if completion.document is not None:
            for name in ("url", "final_url"):
                if len(getattr(completion.document, name)) > MAX_DOCUMENT_URL_CHARS:
                    raise InvalidArgument(Reason.VALUE_TOO_LONG, f"document.{name} is longer than "
                                          f"{MAX_DOCUMENT_URL_CHARS} characters", f"document.{name}")
        for index, spec in enumerate(completion.children):
            jsonvalues.check_object(spec.config, f"children[{index}].config")

    def _record(self, conn: Connection, completion: Completion, job: Job | None, stamp: datetime,
                parents: _Parents, changed: set[str], definitions: dict[str, str], known: LatestVersions) -> Job:
        """One completion inside the caller's transaction (`job`: its row, locked). Raises JobNotFound,
        LeaseLost or InvalidArgument (a 304 against no stored version) before writing anything; the parent's
        counters are left to the caller (`parents`)."""
        if completion.status == PENDING:
            given_back = self._give_back(conn, completion, stamp, changed)
            self._join_session(conn, given_back, completion, stamp, parents)
            return given_back
        if job is None:
            raise JobNotFound(completion.job_id)
        if job.lease_token != completion.token or not completion.token:
            raise LeaseLost(job.id, f"the job is {job.status}")
        if job.status == completion.status:
            return job  # a retried completion whose first try committed: the job keeps its last token
        if job.status != JobStatus.RUNNING:
            raise LeaseLost(job.id, f"the job is {job.status}")
        run_id = job.parent_id or ""
        definition_id = definitions.get(run_id, "")
        basis: Basis | None = None
        if completion.document is not None:
            basis = self.documents.basis(conn, completion.document, run_id, definition_id, known)
        self._join_session(conn, job, completion, stamp, parents)
        if completion.document is not None and basis is not None:
            self.documents.write(conn, completion.document, basis, job.id, run_id, definition_id, stamp, known)
        created = 0
        if completion.children and completion.status == JobStatus.COMPLETED and job.parent_id:
            parent = parents.locked.get(job.parent_id) or self.rows.lock_parent(conn, job.parent_id)
            if not parent.status.terminal:
                created = len(self.rows.insert_children(conn, parent, completion.children, completion.max_children,
                                                        bump_parent=False).jobs)
            # Later children of this call see the places these took (the counters move at the end).
            parents.locked[job.parent_id] = replace(parent, progress_total=parent.progress_total + created)
        if job.parent_id and completion.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            # (Written with the call's other ends in one statement: one UPDATE per page was a third of the
            # manager's time per job.)
            finished = self.lifecycle.ended_child(job, completion.status, stamp, error=completion.error,
                                                  error_reason=completion.error_reason, result=completion.result)
            parents.ended.append(finished)
        else:
            finished = self.lifecycle.set_status(conn, job, completion.status, error=completion.error,
                                                 error_reason=completion.error_reason, result=completion.result,
                                                 changed=changed, settle_parent=False)
        if job.parent_id:
            parents.tally(job.parent_id, created, failed=completion.status == JobStatus.FAILED,
                          kind=basis.kind if basis is not None else "")
        return finished

    @staticmethod
    def _join_session(conn: Connection, job: Job, completion: Completion, stamp: datetime,
                      parents: _Parents) -> None:
        """The cookies the page's responses set join its run's session (written for the whole call at its
        end: a sliding session re-sets one cookie on every page of a batch)."""
        if completion.session_cookies and job.parent_id:
            parents.sessions[job.parent_id] = newest_per_key(
                [*parents.sessions.get(job.parent_id, {}).values(), *completion.session_cookies])

    def _give_back(self, conn: Connection, completion: Completion, stamp: datetime, changed: set[str]) -> Job:
        """A leased child goes back to pending, not to be leased before retry_after (the page failed in a
        way worth another try, e.g. robots.txt answered 503). The parent's counters do not move."""
        job_id, token = completion.job_id, completion.token
        row = conn.execute(
            sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token, jobs.c.status == RUNNING)
            .values(status=PENDING, lease_expires_at=None,
                    not_before=stamp + (completion.retry_after or timedelta(seconds=1)),
                    error=without_nul(completion.error)[:MAX_ERROR_CHARS], error_reason=completion.error_reason,
                    version=jobs.c.version + 1, updated_at=stamp)
            .returning(*jobs.c)).mappings().first()
        if row is None:
            # A retried give-back whose first try committed: still pending, still this token's.
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token,
                                                     jobs.c.status == PENDING)).mappings().first()
        if row is None:
            self._raise_lost(job_id, "", conn)
        changed.add(job_id)
        return Job.from_row(row)

    def _raise_lost(self, job_id: str, why: str, conn: Connection | None = None) -> NoReturn:
        def status(connection: Connection) -> Any:
            return connection.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()

        if conn is not None:
            current = status(conn)
        else:
            with self.db.read_engine.connect() as reader:
                current = status(reader)
        if current is None:
            raise JobNotFound(job_id)
        raise LeaseLost(job_id, why or f"the job is {current}")
