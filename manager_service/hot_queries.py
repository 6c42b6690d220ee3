"""Driver-level SQL for the two hottest job calls: GetJob and the metadata/config update.

Everything else goes through SQLAlchemy Core. These two run on the DB-API connection taken from the
same SQLAlchemy pool, because SQLAlchemy's per-execution work cost three times the database's own
(measured at store level on SQLite: merge 90 us through Core, 29 us here; see README, Benchmarks).
The SQL is the same statement Core would send: one UPDATE ... RETURNING, merge inside the database.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .db import Database
from .jsonvalues import MAX_JSON_BYTES
from .models import jobs

COLUMNS = [column.name for column in jobs.c]
JSON_COLUMNS = ("config", "metadata", "result")
TIME_COLUMNS = ("lease_expires_at", "created_at", "started_at", "finished_at", "updated_at")
SELECTED = ", ".join(f'"{name}"' for name in COLUMNS)


class HotQueries:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.dialect == "postgresql"
        mark = "%s" if self.postgres else "?"
        self._mark = mark
        self._select = f"SELECT {SELECTED} FROM jobs WHERE id = {mark}"

    def _update_sql(self, column: str, merge: bool, with_etag: bool) -> str:
        mark = self._mark
        if self.postgres:
            value = f'quaero_json_merge_patch("{column}", {mark}::jsonb)' if merge else f"{mark}::jsonb"
            size = f'octet_length("{column}"::text)'
        else:
            value = f'json_patch("{column}", {mark})' if merge else mark
            size = f'length(CAST("{column}" AS BLOB))'
        condition = f"id = {mark}" + (f" AND version = {mark}" if with_etag else "")
        return (f'UPDATE jobs SET "{column}" = {value}, version = version + 1, updated_at = {mark} '
                f"WHERE {condition} RETURNING {SELECTED}, {size}")

    def _timestamp(self, moment: datetime) -> Any:
        # SQLAlchemy's SQLite DATETIME storage format (naive UTC), so both paths read each other's rows.
        return moment if self.postgres else moment.replace(tzinfo=None).isoformat(" ", "microseconds")

    def _row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(COLUMNS, values, strict=False))
        if not self.postgres:
            for name in JSON_COLUMNS:
                text = row[name]
                row[name] = json.loads(text) if text is not None else None
            for name in TIME_COLUMNS:
                text = row[name]
                if text is not None:
                    row[name] = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return row

    def _discard_if_broken(self, connection: Any, error: BaseException) -> None:
        # A connection the server dropped (restart, failover) must not go back into the pool.
        if self.postgres and isinstance(error, self.db.write_engine.dialect.loaded_dbapi.OperationalError):
            connection.invalidate(error)  # type: ignore[arg-type]

    def get(self, job_id: str) -> dict[str, Any] | None:
        connection = self.db.read_engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(self._select, (job_id,))
            values = cursor.fetchone()
            cursor.close()
            connection.rollback()  # end the read snapshot before the connection goes back
        except Exception as error:
            self._discard_if_broken(connection, error)
            raise
        finally:
            connection.close()
        return self._row(values) if values is not None else None

    def update_json(self, job_id: str, column: str, text: str, merge: bool, version: int | None,
                    stamp: datetime) -> tuple[dict[str, Any], int] | None:
        """One UPDATE ... RETURNING; returns (row, serialised size of the column), or None when no row
        matched (unknown id or stale version). A result over 64 KiB is rolled back, not committed."""
        parameters: list[Any] = [text, self._timestamp(stamp), job_id]
        if version is not None:
            parameters.append(version)
        sql = self._update_sql(column, merge, version is not None)
        connection = self.db.write_engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql, parameters)
            values = cursor.fetchone()
            cursor.close()
            if values is None:
                connection.rollback()
                return None
            row, size = self._row(values[:-1]), int(values[-1])
            if size > MAX_JSON_BYTES:
                connection.rollback()
            else:
                connection.commit()
            return row, size
        except BaseException as error:
            try:
                connection.rollback()
            except Exception:
                pass
            self._discard_if_broken(connection, error)
            raise
        finally:
            connection.close()
