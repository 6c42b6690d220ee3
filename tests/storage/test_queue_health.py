"""The queue stays fast as a crawl grows: the lease reads the partial index of pending children (not an
index of every job, which PostgreSQL preferred once it had statistics), and PostgreSQL without
autovacuum is vacuumed by the manager (dead index entries of leased children slowed every lease)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from manager_service.storage.db import VACUUM_DEAD_ROWS, connect, migrate
from manager_service.storage.leases import LEASE_ANY
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


def test_the_lease_reads_the_pending_index_whatever_the_statistics(empty_url: str) -> None:
    db = fill(empty_url)
    try:
        lease = str(LEASE_ANY.compile(db.write_engine))
        with db.write_engine.connect() as conn:
            if db.dialect == "postgresql":
                conn.exec_driver_sql("ANALYZE jobs")
                select = lease[lease.index("SELECT"):lease.rindex(")")].replace("%(l_now)s", "now()")
                select = select.replace("%(l_limit)s", "8").replace("%(param_1)s", "0")
                plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {select}"))
            else:
                conn.exec_driver_sql("ANALYZE")
                select = lease[lease.index("SELECT"):lease.rindex(")")]
                plan = "\n".join(str(row) for row in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {select}", ("2026-06-01", 8, 0)))
        assert "ix_jobs_pending" in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
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
