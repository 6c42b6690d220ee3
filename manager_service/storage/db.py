"""Engines and migrations.

SQLite: WAL, a busy timeout, foreign keys on, and every write through ONE connection (a pool of one),
which keeps write latency flat; reads use their own small pool, which WAL lets run beside the writer.
PostgreSQL: a pool for writes (transactions) and one for reads (autocommit: single statements).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.types.json
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from quaero.errors import QuaeroError, Reason, Unavailable

from .driver import HotCursors
from .jsonvalues import dumps, loads

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x717561657230  # an advisory lock key of this project's own ("quaer0")
VACUUM_LOCK = MIGRATION_LOCK + 1
PRUNE_LOCK = MIGRATION_LOCK + 2
VACUUMED_TABLES = ("jobs", "documents", "contents", "job_logs", "run_cookies", "run_sessions")
VACUUM_DEAD_ROWS, VACUUM_DEAD_SHARE = 5000, 0.1  # a table is vacuumed past 5,000 + 10% of its rows dead


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # NORMAL in WAL mode: a committed write survives the process being killed (it is in the WAL);
    # only an OS crash or power loss can take the last transactions.
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (which fsync) run in a background thread (Database.checkpoint), not in the commit
    # of whichever request happened to cross the threshold: that was the p99 of a write.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


@dataclass
class Database:
    write_engine: Engine
    read_engine: Engine
    # This process's name on the database server (PostgreSQL's application_name): change notices carry
    # it, so a manager can tell its own changes from another manager's.
    instance: str = ""
    _hot: list[HotCursors] = field(default_factory=list)

    def hot_cursors(self, engine: Engine) -> HotCursors:
        """Cursors kept out of `engine`'s pool for the hottest statements; returned when disposed."""
        hot = HotCursors(engine)
        self._hot.append(hot)
        return hot

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    def checkpoint(self) -> None:
        """Copies the SQLite WAL back into the database without blocking writers (no-op elsewhere)."""
        if self.dialect == "sqlite":
            with self.read_engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def vacuum_if_needed(self, force: bool = False) -> list[str]:
        """PostgreSQL whose autovacuum is off (this workplace's cluster runs so): the busy tables are
        vacuumed here once their dead rows pile up, one manager at a time. Every leased or finished child
        leaves a dead row version behind, and its index entries stay until a vacuum: a 100,000-page crawl
        without one leased through ~50,000 dead entries of the pending index, 6.6 ms a lease, and ran at
        half its speed mid-run. With autovacuum on (PostgreSQL's default) this does nothing. Returns the
        tables vacuumed."""
        if self.dialect != "postgresql":
            return []
        with self.read_engine.connect() as connection:
            if connection.exec_driver_sql("SELECT current_setting('autovacuum')").scalar() == "on":
                return []
            due = [name for name, dead, live in connection.exec_driver_sql(
                "SELECT relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relname = ANY(%(names)s)",
                {"names": list(VACUUMED_TABLES)}) if force or dead > VACUUM_DEAD_ROWS + VACUUM_DEAD_SHARE * live]
        if not due:
            return []
        with self.turn(VACUUM_LOCK) as connection:
            if connection is None:
                return []
            for name in due:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {name}")  # (autocommit: outside a transaction)
        return due

    @contextlib.contextmanager
    def turn(self, key: int) -> Iterator[Connection | None]:
        """One manager at a time for `key`'s work: on PostgreSQL an autocommit connection holding the
        session advisory lock, or None when another manager holds it; on SQLite (one writer, one machine) a
        plain connection."""
        with self.read_engine.connect() as connection:
            if self.dialect != "postgresql":
                yield connection
                return
            if not connection.exec_driver_sql("SELECT pg_try_advisory_lock(%(key)s)", {"key": key}).scalar():
                yield None
                return
            try:
                yield connection
            finally:
                connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": key})

    def reclaim(self, pages: int = 2000) -> None:
        """After a prune, SQLite hands up to `pages` free pages back to the file system (auto_vacuum =
        INCREMENTAL); PostgreSQL's freed row space is vacuumed for reuse (vacuum_if_needed)."""
        if self.dialect == "sqlite":
            with self.write_engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"PRAGMA incremental_vacuum({int(pages)})")
        else:
            self.vacuum_if_needed(force=True)  # (a prune leaves its rows dead at once: reused only once vacuumed)

    def dispose(self) -> None:
        for hot in self._hot:
            hot.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _normalise_url(url: str) -> str:
    # "postgresql://" means psycopg 3 here, the driver this project installs.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _private_sqlite_file(url: str) -> None:
    """The database holds crawled logged-in pages: it is created 0600 (SQLite gives its -wal and -shm files
    the database file's mode), and a file an older release left readable by others is made private."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for name in (path, path + "-wal", path + "-shm"):
            if os.path.exists(name) and os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def connect(url: str) -> Database:
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        args = {"check_same_thread": False, "timeout": 10}
        # Every user of these pools ends its own transaction (commit, or rollback on error/close), so the
        # pool's extra rollback on return is skipped: on the hot path it was one more SQLite call each.
        writer = sa.create_engine(url, hide_parameters=True, pool_size=1, max_overflow=0, pool_timeout=60,
                                  connect_args=args, pool_reset_on_return=None, json_serializer=dumps,
                                  json_deserializer=loads)
        reader = sa.create_engine(url, hide_parameters=True, pool_size=8, max_overflow=8, connect_args=args,
                                  pool_reset_on_return=None, json_serializer=dumps, json_deserializer=loads)
        for engine in (writer, reader):
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return Database(writer, reader)
    # No pre-ping: it doubled the round trips of every call; broken connections are invalidated on error.
    instance = f"quaero-manager-{uuid.uuid4().hex[:12]}"
    common: dict[str, Any] = {"hide_parameters": True, "pool_recycle": 600,
                              "connect_args": {"application_name": instance}}
    writer = sa.create_engine(url, pool_size=12, max_overflow=12, **common)
    # Reads are single statements: in autocommit, each is one round trip (no BEGIN before it, no ROLLBACK
    # after it on return to the pool). GetJob's server CPU on PostgreSQL: see README, Benchmarks.
    reader = sa.create_engine(url, pool_size=8, max_overflow=8, isolation_level="AUTOCOMMIT",
                              pool_reset_on_return=None, **common)
    for engine in (writer, reader):
        sa.event.listen(engine, "connect", _psycopg_json)
    return Database(writer, reader, instance)


def _psycopg_json(dbapi_connection: Any, _record: Any) -> None:
    # jsonb read by psycopg: the same decoder as SQLite's JSON text (jsonvalues.loads), on our own
    # connections only (psycopg's global default is left to whoever else uses it in the process).
    psycopg.types.json.set_json_loads(loads, dbapi_connection)


def migrate(db: Database, revision: str = "head") -> None:
    """Brings the schema to the newest Alembic revision (or to `revision`, for upgrade tests). Managers
    started together on one database take turns: the first migrates, the others find the schema current."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _sqlite_migration_lock(db):
        _incremental_auto_vacuum(db)
        with db.write_engine.begin() as connection:
            if db.dialect == "postgresql":
                # (the lock ends with this transaction)
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def _incremental_auto_vacuum(db: Database) -> None:
    """SQLite gives the pages a prune frees back to the file (Database.reclaim) only in auto_vacuum mode
    INCREMENTAL, which a database takes when it is created or by one VACUUM (a copy of the whole file:
    done once, when an older database is first opened by this release)."""
    if db.dialect != "sqlite":
        return
    with db.write_engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        if connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2:
            return
        connection.exec_driver_sql("PRAGMA auto_vacuum = INCREMENTAL")
        connection.exec_driver_sql("VACUUM")


@contextlib.contextmanager
def _sqlite_migration_lock(db: Database) -> Iterator[None]:
    """SQLite runs DDL outside a transaction (the driver starts one only for DML), so processes that
    migrate one file take turns on a lock file beside it."""
    path = db.write_engine.url.database if db.dialect == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    descriptor = os.open(path + ".migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # (releases the lock)


def unavailable_for(error: Exception) -> QuaeroError | None:
    """A database that dropped the connection, is unreachable or stayed locked is UNAVAILABLE (worth a
    retry shortly), not INTERNAL. SQLAlchemy replaces broken connections, so the retry gets a new one."""
    transient = (sa.exc.OperationalError, sa.exc.TimeoutError, psycopg.OperationalError, sqlite3.OperationalError)
    if isinstance(error, transient) or (isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated):
        return Unavailable(Reason.DATABASE_UNAVAILABLE, "the manager's database is not reachable right now "
                           f"({type(error).__name__}); retry shortly")
    return None
