"""The queue stays fast as a crawl grows: the lease reads the partial index of pending children (not an
index of every job, which PostgreSQL preferred once it had statistics), and PostgreSQL without
autovacuum is vacuumed by the manager (dead index entries of leased children slowed every lease)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from manager_service.storage.db import VACUUM_DEAD_ROWS, connect, migrate
from manager_service.storage.leases import LEASE_ANY, LEASE_OF_TYPE, plan_lease
from manager_service.storage.models import jobs

FINISHED, PENDING = 40_000, 10_000


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def fill(url: str) -> object:
    """A run with FINISHED completed children created before PENDING pending ones."""
    db = connect(url)
    migrate(db)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    parent = str(uuid.uuid4())
    common = {"type": "crawl_page", "name": "", "config": {}, "metadata": {}, "result": {}, "updated_at": start}
    with db.write_engine.begin() as conn:
        conn.execute(sa.insert(jobs).values(id=parent, status="running", created_at=start,
                                            **{**common, "type": "crawl"}))
        rows = [{"id": str(uuid.uuid4()), "parent_id": parent, "created_at": start + timedelta(milliseconds=n),
                 "status": "completed" if n < FINISHED else "pending", **common} for n in range(FINISHED + PENDING)]
        conn.execute(sa.insert(jobs), rows)
    return db


def lease_plan(db: Any, statement: Any) -> str:
    """EXPLAIN of the lease as lease() runs it (plan_lease first, the statement's own parameters)."""
    compiled = statement.compile(db.write_engine)
    stamp = datetime(2026, 6, 1, tzinfo=UTC)
    params = {**compiled.params, "l_type": "crawl_page", "l_limit": 8, "l_now": stamp, "l_token": "t",
              "l_owner": "w", "l_until": stamp}
    with db.write_engine.connect() as conn:
        plan_lease(conn)
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if db.dialect == "postgresql":
                cursor.execute(f"EXPLAIN {compiled}", params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            else:
                names = compiled.positiontup or []
                cursor.execute(f"EXPLAIN QUERY PLAN {compiled}", [
                    params[name].isoformat() if isinstance(params[name], datetime) else params[name] for name in names])
                plan = "\n".join(str(row) for row in cursor.fetchall())
        finally:
            cursor.close()
        conn.rollback()
    return plan


def test_the_lease_reads_the_pending_index_whatever_the_statistics(empty_url: str) -> None:
    """Fresh (no statistics: a big run just created, autovacuum off) and analysed, leasing any type and one:
    the lease walks ix_jobs_pending in order and stops at its limit; nothing reads and sorts the queue."""
    db = fill(empty_url)
    try:
        for analysed in (False, True):
            if analysed:
                with db.write_engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE jobs" if db.dialect == "postgresql" else "ANALYZE")
                    conn.commit()
            for statement in (LEASE_ANY, LEASE_OF_TYPE):
                plan = lease_plan(db, statement)
                assert "ix_jobs_pending" in plan, plan
                assert "TEMP B-TREE" not in plan and "Sort" not in plan and "Bitmap" not in plan, plan
    finally:
        db.dispose()


def test_postgresql_without_autovacuum_is_vacuumed_by_the_manager(empty_url: str) -> None:
    db = fill(empty_url)
    try:
        if db.dialect == "sqlite":
            assert db.vacuum_if_needed() == []  # (SQLite gets its space back its own way)
            return
        with db.read_engine.connect() as conn:
            autovacuum = conn.exec_driver_sql("SELECT current_setting('autovacuum')").scalar()
        with db.write_engine.begin() as conn:  # every pending child leased: a dead row version each
            conn.execute(sa.update(jobs).where(jobs.c.status == "pending").values(status="running"))
            conn.execute(sa.update(jobs).where(jobs.c.status == "running", jobs.c.parent_id.is_not(None))
                         .values(status="completed"))
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")  # (the writer's counts, at its commit)

        def dead() -> int:
            with db.read_engine.connect() as conn:
                return int(conn.exec_driver_sql(
                    "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'").scalar() or 0)

        wait_until(lambda: dead() > VACUUM_DEAD_ROWS + 0.1 * (FINISHED + PENDING), "the dead rows to be counted")
        vacuumed = db.vacuum_if_needed()
        if autovacuum == "on":
            assert vacuumed == []  # PostgreSQL's own autovacuum does it
            return
        assert vacuumed == ["jobs"]
        wait_until(lambda: dead() < VACUUM_DEAD_ROWS, "the vacuum to be counted")
        assert db.vacuum_if_needed() == []  # nothing due any more
    finally:
        db.dispose()
