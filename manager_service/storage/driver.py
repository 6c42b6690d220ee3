"""Driver-level execution for the hottest statements (see jobs_sql): what SQLAlchemy would do with a
parameter, done directly, so that both paths read and write the same stored forms."""
from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg.errors
from psycopg import pq
from psycopg.adapt import Transformer
from sqlalchemy.engine import Connection, Engine


def placeholder(postgres: bool) -> str:
    return "%s" if postgres else "?"


def named_placeholder(name: str, postgres: bool) -> str:
    """The mark of the named parameter `name` (the statement's parameters are then a dict)."""
    return f"%({name})s" if postgres else f":{name}"


def timestamp(moment: datetime, postgres: bool) -> Any:
    """SQLAlchemy's SQLite DATETIME storage format (naive UTC text); PostgreSQL takes the datetime."""
    return moment if postgres else _sqlite_time(moment)


@functools.lru_cache(maxsize=64)
def _sqlite_time(moment: datetime) -> str:
    # (Cached: a batch of new children repeats one moment in several columns of every row.)
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def cursor(conn: Connection) -> Any:
    """A DB-API cursor inside `conn`'s transaction."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


MAX_PREPARED = 64


class HotCursors:
    """Cursors for the hottest single statements (GetJob's read; the metadata merge on PostgreSQL), each
    on a connection kept checked out of `engine`'s pool and handed from call to call. SQLAlchemy's
    checkout and return plus a new cursor cost more than the read itself (psycopg: 131 -> ~70 us of the
    manager's CPU per read; see README, Benchmarks). Only single statements outside a transaction run
    here (SQLite reads, PostgreSQL's autocommit pool), so a connection carries no state between calls.

    At most `keep` are kept idle (more are returned to the pool); one older than `recycle` seconds is
    replaced, as the pool's pool_recycle would; `close` returns them all (Database.dispose calls it)."""

    def __init__(self, engine: Engine, keep: int = 4, recycle: float = 600.0) -> None:
        self._engine = engine
        self._keep = keep
        self._recycle = recycle
        self._idle: list[Hot] = []  # (list.pop and append are atomic: no lock)
        self._closed = False

    def take(self) -> Hot:
        while True:
            try:
                hot = self._idle.pop()
            except IndexError:
                break
            if time.monotonic() - hot.born < self._recycle:
                return hot
            hot.connection.close()
        connection = self._engine.raw_connection()
        return Hot(connection, connection.cursor(), time.monotonic())

    def give_back(self, hot: Hot) -> None:
        if self._closed or len(self._idle) >= self._keep:
            hot.connection.close()
        else:
            self._idle.append(hot)

    def discard(self, hot: Hot, error: BaseException) -> None:
        """A call on it failed: the connection is not used again (a dropped one is invalidated)."""
        hot.connection.invalidate(error)

    def close(self) -> None:
        """Every idle connection back to the pool, and later ones too (the engine is being disposed)."""
        self._closed = True
        for hot in self._drain():
            hot.connection.close()

    def drop_idle(self) -> None:
        """The server dropped us (restart, failover): the idle connections are dead too."""
        for hot in self._drain():
            hot.connection.invalidate()

    def _drain(self) -> list[Hot]:
        drained = []
        while True:
            try:
                drained.append(self._idle.pop())
            except IndexError:  # (another thread took the last one)
                return drained


@dataclass(slots=True)
class Hot:
    connection: Any  # SQLAlchemy's pooled connection (checked out)
    cursor: Any
    born: float
    prepared: dict[str, bytes] = field(default_factory=dict)  # run_prepared's statement names, by their SQL
    loader: Any = None  # run_prepared's psycopg Transformer for this connection


def run_prepared(hot: Hot, sql: str, parameters: Sequence[str | None]) -> tuple[Any, ...] | None:
    """PostgreSQL: the first row of a single statement (`sql` with $1.. marks, text parameters) straight
    through libpq (psycopg.pq), prepared once per connection, its values loaded by psycopg's own loaders
    (the same Python values a cursor gives: aware datetimes, jsonb by jsonvalues.loads). A psycopg
    cursor's execute cost the manager 3x the CPU of the call itself, most of it under load (see README,
    Benchmarks); errors are psycopg's, as a cursor raises them. A connection holds at most
    MAX_PREPARED statements (the merge's text follows its patch's shape); past them, unprepared."""
    connection = hot.connection.driver_connection
    pgconn = connection.pgconn
    if hot.loader is None:
        hot.loader = Transformer(connection)
    values = [value.encode() if value is not None else None for value in parameters]
    name = hot.prepared.get(sql)
    if name is None and len(hot.prepared) < MAX_PREPARED:
        name = f"quaero_{len(hot.prepared)}".encode()
        _check(pgconn.prepare(name, sql.encode()), connection)
        hot.prepared[sql] = name
    if name is not None:
        result = _check(pgconn.exec_prepared(name, values), connection)
    else:
        result = _check(pgconn.exec_params(sql.encode(), values), connection)
    if not result.ntuples:
        return None
    hot.loader.set_pgresult(result)
    return hot.loader.load_row(0, tuple)  # type: ignore[no-any-return]


def numbered(sql: str) -> tuple[str, list[str]]:
    """psycopg's %(name)s marks as libpq's $1..: the statement's text, and the names in their numbers'
    order (their values go to run_prepared through as_text)."""
    order: dict[str, int] = {}

    def mark(match: re.Match[str]) -> str:
        return f"${order.setdefault(match.group(1), len(order) + 1)}"

    return NAMED_MARK.sub(mark, sql), list(order)


NAMED_MARK = re.compile(r"%\((\w+)\)s")


def as_text(value: Any) -> str | None:
    """A parameter's text form for libpq: str as is, int, datetime (ISO 8601 with its offset), and a list
    of str as a text[] literal."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # text[]: each element quoted, \ and " escaped (PostgreSQL's array syntax)
        return "{" + ",".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in value) + "}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no text form for a {type(value).__name__} parameter")


def _check(result: Any, connection: Any) -> Any:
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        if connection.pgconn.status == pq.ConnStatus.BAD:
            # (what psycopg raises for a lost connection; the result of one carries no SQLSTATE)
            message = connection.pgconn.error_message.decode(connection.info.encoding, "replace").strip()
            raise psycopg.OperationalError(f"the connection was lost: {message}")
        raise psycopg.errors.error_from_result(result, encoding=connection.info.encoding)
    return result
