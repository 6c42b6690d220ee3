"""How a job's status moves, and what a child's end does to its parent: counters, completion, failure
under the run's RunPolicy (max_child_failures, failure_action), and cancelling what is pending."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.crawl_spec import FailureAction, RunPolicy
from quaero.errors import FailedPrecondition, InvalidArgument, Reason
from quaero.job_status import TRANSITIONS, JobStatus
from quaero.limits import without_nul

from .documents import count_gone
from .job_rows import NO_DOCUMENTS, JobRows
from .models import jobs
from .records import DocumentCounts, Job

MAX_ERROR_CHARS = 8192


def check_transition(job: Job, status: JobStatus) -> None:
    current = job.status
    if status not in TRANSITIONS.get(current, frozenset()):
        if current.terminal:
            message = f"job {job.id} is {current}, a final state; it cannot become {status}"
        else:
            allowed = ", ".join(sorted(TRANSITIONS[current]))
            message = f"job {job.id} is {current}; it can become {allowed}, not {status}"
        raise FailedPrecondition(Reason.ILLEGAL_TRANSITION, message, "status",
                                 {"job_id": job.id, "from": str(current), "to": str(status)})


def _status_values(job: Job, status: JobStatus, stamp: datetime, error: str, error_reason: str,
                   result: dict[str, Any] | None) -> dict[str, Any]:
    """The columns a move to `status` writes (beside version and updated_at)."""
    values: dict[str, Any] = {"status": status.value}
    if status == JobStatus.RUNNING and job.started_at is None:
        values["started_at"] = stamp
    if status.terminal:
        # The lease token stays: a retried completion that presents it is answered, not refused.
        values.update(finished_at=stamp, lease_expires_at=None)
    if status == JobStatus.COMPLETED:
        values.update(error="", error_reason="")  # what an earlier, retried attempt said no longer holds
    if error:
        values["error"] = without_nul(error)[:MAX_ERROR_CHARS]
    if error_reason:
        values["error_reason"] = error_reason[:64]
    if result is not None:
        values["result"] = result
    return values


class Lifecycle:
    def __init__(self, rows: JobRows) -> None:
        self.rows = rows

    def set_status(self, conn: Connection, job: Job, status: JobStatus, *, etag: str = "", error: str = "",
                   error_reason: str = "", result: dict[str, Any] | None = None, children_created: int = 0,
                   changed: set[str] | None = None, settle_parent: bool = True) -> Job:
        """Writes the status (and its times); a child's end settles its parent in the same transaction
        (unless the caller settles several children's parent at once: settle_parent=False, then
        children_finished). The ids of every job this changed are added to `changed` (for the watchers)."""
        changed = changed if changed is not None else set()
        changed.add(job.id)
        stamp = self.rows.clock.now()
        values = _status_values(job, status, stamp, error, error_reason, result)
        if status == JobStatus.COMPLETED and job.parent_id is None and job.previous_run_id:
            values["docs_gone"] = count_gone(conn, job.id, job.previous_run_id)
        updated = self.rows.conditional_update(conn, job.id, etag, values)
        if status.terminal:
            if job.parent_id and settle_parent:
                self.children_finished(conn, job.parent_id, finished=1, failed=int(status == JobStatus.FAILED),
                                       created=children_created, changed=changed)
            if status == JobStatus.CANCELLED:
                self.cancel_children(conn, job.id, stamp, changed)
        return updated

    def ended_child(self, job: Job, status: JobStatus, stamp: datetime, *, error: str = "", error_reason: str = "",
                    result: dict[str, Any] | None = None) -> Job:
        """A leased child as set_status(..., settle_parent=False) would leave it COMPLETED or FAILED, without
        writing it: the caller writes several such ends in one statement (end_children) and settles their
        parents (children_finished)."""
        values = _status_values(job, status, stamp, error, error_reason, result)
        return replace(job, **{**values, "status": status}, version=job.version + 1, updated_at=stamp)

    def end_children(self, conn: Connection, ended: Sequence[Job], stamp: datetime, changed: set[str]) -> None:
        """Writes the ends ended_child worked out, in one statement (the rows are locked by the caller)."""
        if ended:
            self.rows.sql.end_rows(conn, ended, stamp)
            changed.update(job.id for job in ended)

    def children_finished(self, conn: Connection, parent_id: str, *, finished: int, failed: int, created: int,
                          changed: set[str], documents: DocumentCounts = NO_DOCUMENTS) -> None:
        """`finished` children of the parent ended (`failed` of them failed) and discovered `created` new
        ones: its counters move in one UPDATE, and it ends when that was the last or too many failed."""
        counters = self.rows.bump_parent(conn, parent_id, created=created, finished=finished, failed=failed,
                                         documents=documents)
        changed.add(parent_id)
        if counters.status != JobStatus.RUNNING:
            return
        if not counters.children_failed and counters.progress_current < counters.progress_total:
            return  # nothing failed and more to come: no decision to take (the common case, per page)
        parent = self.rows.select_for_update(conn, parent_id)
        assert parent is not None
        policy = _run_policy(parent.config)
        over = parent.children_failed > policy.max_child_failures
        summary = {"children": parent.progress_total, "failed": parent.children_failed}
        if over and policy.failure_action == FailureAction.STOP_ALL:
            message = (f"{parent.children_failed} child jobs failed, more than the tolerance of "
                       f"{policy.max_child_failures} (failure_action stop_all): pending children cancelled")
            self.set_status(conn, parent, JobStatus.FAILED, error=message, error_reason=Reason.TOO_MANY_CHILD_FAILURES,
                            result=summary, changed=changed)
            self.cancel_children(conn, parent_id, self.rows.clock.now(), changed)
        elif parent.progress_current >= parent.progress_total:
            if over:
                message = (f"{parent.children_failed} of {parent.progress_total} child jobs failed, more than the "
                           f"tolerance of {policy.max_child_failures}")
                self.set_status(conn, parent, JobStatus.FAILED, error=message,
                                error_reason=Reason.TOO_MANY_CHILD_FAILURES, result=summary, changed=changed)
            else:
                self.set_status(conn, parent, JobStatus.COMPLETED, result=summary, changed=changed)

    def cancel_children(self, conn: Connection, parent_id: str, stamp: datetime, changed: set[str]) -> int:
        cancelled = conn.execute(
            sa.update(jobs).where(jobs.c.parent_id == parent_id,
                                  jobs.c.status.in_((JobStatus.PENDING.value, JobStatus.RUNNING.value)))
            .values(status=JobStatus.CANCELLED.value, finished_at=stamp, lease_token=None, lease_expires_at=None,
                    error="cancelled with its parent", error_reason=Reason.PARENT_CANCELLED.value,
                    version=jobs.c.version + 1, updated_at=stamp)
            .returning(jobs.c.id)).scalars().all()
        count = len(cancelled)
        changed.update(cancelled)
        changed.add(parent_id)
        if count:
            conn.execute(sa.update(jobs).where(jobs.c.id == parent_id).values(
                progress_current=jobs.c.progress_current + count))
        return count


def _run_policy(config: dict[str, Any]) -> RunPolicy:
    """The parent's policy, as its run wrote it; a config that does not say means the defaults."""
    try:
        return RunPolicy.from_mapping(config)
    except InvalidArgument:  # a run created by hand (CreateJob) may hold anything here
        return RunPolicy()
