"""Driver-level execution for the hottest statements (see jobs_sql): what SQLAlchemy would do with a
parameter, done directly, so that both paths read and write the same stored forms."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection


def placeholder(postgres: bool) -> str:
    return "%s" if postgres else "?"


def named_placeholder(name: str, postgres: bool) -> str:
    """The mark of the named parameter `name` (the statement's parameters are then a dict)."""
    return f"%({name})s" if postgres else f":{name}"


def timestamp(moment: datetime, postgres: bool) -> Any:
    """SQLAlchemy's SQLite DATETIME storage format (naive UTC text); PostgreSQL takes the datetime."""
    return moment if postgres else moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def cursor(conn: Connection) -> Any:
    """A DB-API cursor inside `conn`'s transaction."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
