"""The scheduler: every manager looks once a second (housekeeping) for definitions whose schedule has a
tick due, and the database decides which one acts on it. A tick is claimed by inserting its row into
schedule_ticks (primary key: definition and tick) in the same transaction that starts its run, so a tick
starts at most one run whatever happens: several managers looking at once, a manager killed mid-way (its
transaction never happened; the next look claims the tick), clocks a few seconds apart (a manager whose
clock is ahead looks early; the row is the same row).

A scheduled run is an ordinary run, started as ExecuteJobDefinition starts one (quaero.run_plan): its
parent is written with its metadata (auth_id, job_definition_id, phase, started_by = schedule) before any
child exists, in one transaction here."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from quaero import run_plan, tracing
from quaero.crawl_spec import Definition
from quaero.errors import NotFound, Reason
from quaero.job_status import JobStatus
from quaero.schedules import Overlap, Schedule

from ..notifier import ChangeNotifier
from .clock import aware
from .credentials import CredentialStore
from .db import Database
from .definitions import StoredDefinition
from .job_rows import ROW_DEFAULTS, JobRows
from .lifecycle import Lifecycle
from .models import job_definitions, jobs, schedule_ticks
from .records import ChildSpec, Job

log = logging.getLogger("quaero.manager.schedules")
ACTIVE = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
STARTED, SKIPPED, BUFFERED, MISSED, PAUSED = "started", "skipped", "buffered", "missed", "paused"
KEEP_TICKS = timedelta(days=30)
MAX_STALE_COUNTED = 1000  # tick rows older than this go (the newest of each definition stays)


@dataclass(frozen=True)
class TickOutcome:
    definition_id: str
    tick: datetime
    status: str
    run_id: str = ""
    count: int = 1


class Scheduler:
    def __init__(self, db: Database, rows: JobRows, lifecycle: Lifecycle, credentials: CredentialStore,
                 notifier: ChangeNotifier, instance: str = "") -> None:
        self.db = db
        self.rows = rows
        self.lifecycle = lifecycle
        self.credentials = credentials
        self.notifier = notifier
        self.instance = instance

    def scheduled(self) -> list[StoredDefinition]:
        has_schedule = (sa.text("spec ? 'schedule'") if self.db.dialect == "postgresql"
                        else sa.text("json_extract(spec, '$.schedule') IS NOT NULL"))
        with self.db.read_engine.connect() as conn:
            rows = conn.execute(sa.select(job_definitions).where(has_schedule)).mappings().all()
        found = [StoredDefinition.from_row(row) for row in rows if (row["spec"] or {}).get("schedule")]
        return [stored for stored in found if stored.definition.schedule is not None]

    def fire_due(self, now: datetime, scheduled: list[StoredDefinition] | None = None) -> list[TickOutcome]:
        """Acts on every due tick of every schedule (called once a second by each manager)."""
        outcomes: list[TickOutcome] = []
        for stored in self.scheduled() if scheduled is None else scheduled:
            try:
                outcomes += self._look(stored, now)
            except sa.exc.SQLAlchemyError as error:  # one definition's trouble does not stop the others
                log.warning("event=schedule_failed definition=%s error=%s", stored.definition.id, type(error).__name__)
        return outcomes

    def _look(self, stored: StoredDefinition, now: datetime) -> list[TickOutcome]:
        definition = stored.definition
        schedule = definition.schedule
        assert schedule is not None
        outcomes: list[TickOutcome] = []
        with self.db.read_engine.connect() as conn:
            cursor = conn.execute(sa.select(sa.func.max(schedule_ticks.c.tick_at)).where(
                schedule_ticks.c.definition_id == definition.id)).scalar()
        cursor = aware(cursor if cursor is not None else stored.updated_at)
        # Ticks older than the catch-up window are not walked one by one (a per-second schedule down for a
        # day has 86,400): they are counted up to MAX_STALE_COUNTED and recorded as one `missed` row.
        fresh_from = now - timedelta(seconds=schedule.catchup_seconds)
        if schedule.paused:
            # Ticks pass without runs, and are not caught up on resume: one row marks how far they went.
            last = schedule.last_tick_before(now + timedelta(microseconds=1))
            if last > cursor:
                outcomes += self._record_only(definition.id, last, PAUSED, 1, now, "the schedule is paused")
            return outcomes
        if cursor < fresh_from:
            stale = list(schedule.ticks(cursor, fresh_from - timedelta(microseconds=1), MAX_STALE_COUNTED + 1))
            if stale:
                last = stale[-1] if len(stale) <= MAX_STALE_COUNTED else schedule.last_tick_before(fresh_from)
                count = min(len(stale), MAX_STALE_COUNTED)
                many = "at least " if len(stale) > MAX_STALE_COUNTED else ""
                note = (f"{many}{count} tick(s) from {stale[0].isoformat()} to {last.isoformat()} are older than "
                        f"catchup_window ({schedule.to_mapping()['catchup_window']}): no manager was running then")
                recorded = self._record_only(definition.id, last, MISSED, count, now, note)
                if recorded:
                    log.warning("event=schedule_ticks_missed definition=%s count=%d%s first=%s last=%s",
                                definition.id, count, "+" if many else "", stale[0].isoformat(), last.isoformat())
                outcomes += recorded
                cursor = max(cursor, last)
        due = []
        for tick in schedule.ticks(cursor, now):
            if tick + schedule.jitter_for(definition.id, tick) > now:
                break  # (this tick's jitter has not passed: it, and those after it, wait)
            due.append(tick)
        for tick in due:
            outcome = self._fire(definition, schedule, tick, now)
            if outcome is not None:
                outcomes.append(outcome)
        buffered = self._start_buffered(definition, now)
        if buffered is not None:
            outcomes.append(buffered)
        return outcomes

    # ---- one tick -------------------------------------------------------------------------------------
    def _claim(self, conn: Connection, definition_id: str, tick: datetime, status: str, now: datetime,
               count: int = 1, note: str = "") -> bool:
        """Inserts the tick's row; False when it was there already (another manager, or an earlier look)."""
        values = {"definition_id": definition_id, "tick_at": tick, "status": status, "count": count, "note": note,
                  "recorded_at": now, "recorded_by": self.instance}
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        result = conn.execute(insert(schedule_ticks).values(values).on_conflict_do_nothing())
        return bool(result.rowcount)

    def _record_only(self, definition_id: str, tick: datetime, status: str, count: int, now: datetime,
                     note: str) -> list[TickOutcome]:
        with self.db.write_engine.begin() as conn:
            if not self._claim(conn, definition_id, tick, status, now, count, note):
                return []
        return [TickOutcome(definition_id, tick, status, count=count)]

    def _fire(self, definition: Definition, schedule: Schedule, tick: datetime, now: datetime) -> TickOutcome | None:
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            if not self._claim(conn, definition.id, tick, STARTED, now):
                return None
            active = list(conn.execute(_runs_going(definition.id).with_for_update()).scalars())
            status, note, run_id = STARTED, "", ""
            if active and schedule.overlap == Overlap.SKIP:
                status, note = SKIPPED, f"run {active[0]} was still going (overlap = skip)"
            elif active and schedule.overlap == Overlap.BUFFER_ONE:
                waiting = conn.execute(_buffered_tick(definition.id)).first()
                status, note = ((SKIPPED, f"run {active[0]} was still going and a tick already waits for it "
                                 "(overlap = buffer_one)") if waiting is not None
                                else (BUFFERED, f"waits for run {active[0]} to end (overlap = buffer_one)"))
            else:
                if active:  # cancel_previous
                    for job_id in active:
                        job = self.rows.select_for_update(conn, job_id)
                        if job is not None and not job.status.terminal:
                            self.lifecycle.set_status(conn, job, JobStatus.CANCELLED, error="cancelled by the next "
                                                      "tick of its schedule (overlap = cancel_previous)",
                                                      error_reason=Reason.CANCELLED_BY_SCHEDULE, changed=changed)
                run_id = self._start_run(conn, definition, tick, now, changed)
            conn.execute(sa.update(schedule_ticks).where(
                schedule_ticks.c.definition_id == definition.id, schedule_ticks.c.tick_at == tick)
                .values(status=status, note=note, run_id=run_id or None))
        self.notifier.notify(*changed)
        log.info("event=schedule_tick definition=%s tick=%s outcome=%s run=%s", definition.id, tick.isoformat(),
                 status, run_id or "-")
        return TickOutcome(definition.id, tick, status, run_id)

    def _start_buffered(self, definition: Definition, now: datetime) -> TickOutcome | None:
        """The tick that waited (buffer_one) starts once no run of the definition is going."""
        with self.db.read_engine.connect() as conn:
            waiting = conn.execute(_buffered_tick(definition.id)).scalar()
        if waiting is None:
            return None
        tick = aware(waiting)
        changed: set[str] = set()
        with self.db.write_engine.begin() as conn:
            if conn.execute(_runs_going(definition.id)).first() is not None:
                return None
            # (The row's lock decides between managers: only one moves it from buffered.)
            taken = conn.execute(sa.update(schedule_ticks).where(
                schedule_ticks.c.definition_id == definition.id, schedule_ticks.c.tick_at == waiting,
                schedule_ticks.c.status == BUFFERED).values(status=STARTED, note="started after the run it waited for")
            ).rowcount
            if not taken:
                return None
            run_id = self._start_run(conn, definition, tick, now, changed)
            conn.execute(sa.update(schedule_ticks).where(
                schedule_ticks.c.definition_id == definition.id, schedule_ticks.c.tick_at == waiting)
                .values(run_id=run_id))
        self.notifier.notify(*changed)
        log.info("event=schedule_tick definition=%s tick=%s outcome=started_after_buffer run=%s", definition.id,
                 tick.isoformat(), run_id)
        return TickOutcome(definition.id, tick, STARTED, run_id)

    # ---- the run ----------------------------------------------------------------------------------
    def _start_run(self, conn: Connection, definition: Definition, tick: datetime, now: datetime,
                   changed: set[str]) -> str:
        """The run, as ExecuteJobDefinition would start it, inside the tick's transaction: the parent with its
        metadata, then its first pages (or its end, when its credentials cannot sign it in)."""
        config = run_plan.run_config(definition.id, definition.spec, definition.policy)
        # A scheduled run's trace starts here (tracing on): its pages join it, as they join ExecuteJobDefinition's.
        span = tracing.start_span("scheduled run", attributes={"quaero.definition_id": definition.id,
                                                               "quaero.schedule_tick": tick.isoformat()})
        with tracing.active(span):
            metadata = run_plan.run_metadata(definition.id, definition.auth_id, "schedule", tick,
                                             trace=tracing.current_carrier())
        try:
            run_id = self._insert_run(conn, definition, config, metadata, tick, now, changed)
            if span is not None:
                span.set_attribute("quaero.run_id", run_id)
            return run_id
        finally:
            if span is not None:
                span.end()

    def _insert_run(self, conn: Connection, definition: Definition, config: dict[str, Any], metadata: dict[str, Any],
                    tick: datetime, now: datetime, changed: set[str]) -> str:
        row = self.rows.new_row(None, run_plan.PARENT_TYPE, definition.name or definition.id, config, metadata, 0, now)
        key = hashlib.sha256(f"{definition.id}|{tick.isoformat()}".encode()).hexdigest()
        self.rows.mark_run(conn, row, definition.id)
        row.update(status=JobStatus.RUNNING.value, started_at=now, request_id=f"schedule/{key}")
        conn.execute(sa.insert(jobs).values(row))
        changed.add(row["id"])
        parent = Job.from_row(ROW_DEFAULTS | row)
        refusal = self._credentials_problem(definition.auth_id, now)
        if refusal is not None:
            reason, message = refusal
            self.lifecycle.set_status(conn, parent, JobStatus.FAILED, error=message, error_reason=reason,
                                      changed=changed)
            return str(row["id"])
        specs = [ChildSpec(type=child["type"], name=child["name"], config=child["config"], dedup_key=child["dedup_key"],
                           depth=0) for child in (run_plan.page(url, 0) for url in run_plan.start_urls(definition.spec))]
        created = self.rows.insert_children(conn, parent, specs, definition.spec.max_pages)
        if not created.jobs:
            self.lifecycle.set_status(conn, parent, JobStatus.COMPLETED, result={"children": 0}, changed=changed)
        return str(row["id"])

    def _credentials_problem(self, auth_id: str, now: datetime) -> tuple[Reason, str] | None:
        """Why the run cannot sign in (gone credentials, or every cookie expired), as ExecuteJobDefinition says."""
        if not auth_id:
            return None
        try:
            info = self.credentials.info(auth_id)
        except NotFound:
            return (Reason.AUTH_NOT_FOUND, f"the definition's auth_id {auth_id!r} names no stored credentials "
                    "(deleted?); import them again with `quaero auth import`")
        expiries = [entry.get("expires") for entry in info.index]
        if info.index and all(expiries):
            last = max(datetime.fromisoformat(str(value)) for value in expiries)
            if last <= now:
                return (Reason.AUTH_EXPIRED, f"every cookie of credentials {auth_id!r} has expired (the last at "
                        f"{last:%Y-%m-%d %H:%M} UTC): sign in to {info.site_domain} again and import its cookies")
        return None

    def forget_old_ticks(self, now: datetime) -> int:
        """Tick rows older than KEEP_TICKS, except each definition's newest (the next look starts from it)."""
        later = schedule_ticks.alias("later")
        with self.db.write_engine.begin() as conn:
            return int(conn.execute(sa.delete(schedule_ticks).where(
                schedule_ticks.c.tick_at < now - KEEP_TICKS,
                sa.exists().where(later.c.definition_id == schedule_ticks.c.definition_id,
                                  later.c.tick_at > schedule_ticks.c.tick_at))).rowcount)

    def next_fires(self, definition: Definition, now: datetime) -> list[datetime]:
        schedule = definition.schedule
        if schedule is None or schedule.paused:
            return []
        return schedule.next_fires(now)


def _runs_going(definition_id: str) -> Any:
    """The definition's runs still pending or running."""
    return sa.select(jobs.c.id).where(jobs.c.definition_id == definition_id, jobs.c.parent_id.is_(None),
                                      jobs.c.status.in_(ACTIVE))


def _buffered_tick(definition_id: str) -> Any:
    """The definition's tick waiting for its running run (buffer_one; at most one)."""
    return sa.select(schedule_ticks.c.tick_at).where(schedule_ticks.c.definition_id == definition_id,
                                                     sa.text("status = 'buffered'"))  # (ix_schedule_ticks_buffered)
