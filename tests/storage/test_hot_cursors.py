"""The connections kept out of the pool for GetJob's read (and the merge on PostgreSQL): reused from call
to call, bounded, recycled, returned to the pool when the database is disposed, and replaced after the
server dropped them."""
from __future__ import annotations

import psycopg
import pytest

from manager_service.servicers.jobs import job_to_proto
from manager_service.storage import Stores
from manager_service.storage.db import connect
from manager_service.storage.driver import HotCursors
from quaero.job_status import JobStatus


def checked_out(engine: object) -> int:
    return engine.pool.checkedout()  # type: ignore[attr-defined]


def test_a_connection_is_reused_and_at_most_keep_stay_out_of_the_pool(database_url: str) -> None:
    db = connect(database_url)
    hot = HotCursors(db.read_engine, keep=2)
    first = hot.take()
    hot.give_back(first)
    again = hot.take()
    assert again.connection is first.connection and again.cursor is first.cursor
    held = [again, hot.take(), hot.take()]
    assert checked_out(db.read_engine) == 3
    for item in held:
        hot.give_back(item)
    assert checked_out(db.read_engine) == 2  # the third went back to the pool
    hot.close()
    assert checked_out(db.read_engine) == 0
    late = hot.take()  # still usable after close (a call during shutdown), but not kept
    hot.give_back(late)
    assert checked_out(db.read_engine) == 0
    db.dispose()


def test_an_old_connection_is_replaced(database_url: str) -> None:
    db = connect(database_url)
    hot = HotCursors(db.read_engine, recycle=0.0)
    first = hot.take()
    hot.give_back(first)
    second = hot.take()
    assert second.connection is not first.connection
    hot.give_back(second)
    db.dispose()
    assert checked_out(db.read_engine) == 0


def test_disposing_the_database_returns_the_stores_hot_connections(stores: Stores) -> None:
    job = stores.jobs.create(parent_id="", type="t", name="n", config={}, metadata={}, request_id="")
    assert stores.jobs.get(job.id).id == job.id
    assert checked_out(stores.db.read_engine) >= 1  # GetJob's connection stayed out, for the next read
    stores.db.dispose()
    assert checked_out(stores.db.read_engine) == 0


def kill_connections(admin_url: str, database: str | None) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                               "AND pid <> pg_backend_pid()", (database,)).fetchone()
    assert killed and killed[0] > 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_reads_and_merges_go_on_after_postgresql_dropped_every_connection(stores: Stores, admin_url: str) -> None:
    database = stores.db.read_engine.url.database
    job = stores.jobs.create(parent_id="", type="t", name="n", config={}, metadata={}, request_id="")
    stores.jobs.update_json(job.id, "metadata", {"a": 1}, False, "")
    kill_connections(admin_url, database)
    assert stores.jobs.get(job.id).metadata == {"a": 1}  # the read runs again on a new connection
    assert stores.jobs.update_json(job.id, "metadata", {"b": 2}, False, "").metadata == {"a": 1, "b": 2}
    kill_connections(admin_url, database)
    # A merge is not run again by the store (in autocommit a dropped connection may have committed it):
    # it fails as a disconnect, which the RPC layer answers UNAVAILABLE or retries; the next one works.
    with pytest.raises(psycopg.OperationalError):
        stores.jobs.update_json(job.id, "metadata", {"c": 3}, False, "")
    assert stores.jobs.update_json(job.id, "metadata", {"c": 3}, False, "").metadata == {"a": 1, "b": 2, "c": 3}


def test_the_hot_read_gives_what_sqlalchemy_gives(stores: Stores) -> None:
    # (On PostgreSQL the hot read goes through libpq's prepared statements with psycopg's loaders.)
    job = stores.jobs.create(parent_id="", type="t", name="n", config={"depth": 2, "list": [1.5, "é", None]},
                             metadata={"auth_id": "site", "nested": {"x": True}}, request_id="")
    stores.jobs.update_status(job.id, JobStatus.RUNNING)
    hot = stores.jobs.get(job.id)
    # (as the API shows them: SQLAlchemy reads SQLite's times as naive UTC, which the answer takes as UTC)
    assert job_to_proto(hot) == job_to_proto(stores.jobs.read_many([job.id])[job.id])
    assert hot.metadata == {"auth_id": "site", "nested": {"x": True}} and hot.config["list"] == [1.5, "é", None]
    assert hot.started_at is not None and hot.started_at.utcoffset() is not None
