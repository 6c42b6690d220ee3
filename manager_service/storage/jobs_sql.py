"""Driver-level SQL for the hottest job statements: GetJob, the metadata/config update, and the
conditional UPDATE ... RETURNING every status change goes through (a page's end, per page).

Everything else goes through SQLAlchemy Core. These run on the DB-API connection of the same
SQLAlchemy pool (the status change on the connection of the caller's transaction), because
SQLAlchemy's per-execution work cost three times the database's own (measured at store level on
SQLite: merge 90 us through Core, 29 us here; see README, Benchmarks). The SQL is the statement Core
would send.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from quaero.errors import Aborted, Reason

from . import driver
from .db import Database
from .jsonvalues import MAX_JSON_BYTES
from .models import jobs

COLUMNS = [column.name for column in jobs.c]
JSON_COLUMNS = ("config", "metadata", "result")
TIME_COLUMNS = ("lease_expires_at", "not_before", "created_at", "started_at", "finished_at", "updated_at")
SELECTED = ", ".join(f'"{name}"' for name in COLUMNS)
INSERT_CHUNK_ROWS = 500


class JobsSql:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.dialect == "postgresql"
        mark = driver.placeholder(self.postgres)
        self._mark = mark
        self._select = f"SELECT {SELECTED} FROM jobs WHERE id = {mark}"
        self._updates: dict[tuple[tuple[str, ...], bool], str] = {}

    def _update_sql(self, column: str, merge: bool, with_etag: bool) -> str:
        mark = self._mark
        if self.postgres:
            value = f'quaero_json_merge_patch("{column}", {mark}::jsonb)' if merge else f"{mark}::jsonb"
            size = f'octet_length("{column}"::text)'
        else:
            value = f'json_patch("{column}", {mark})' if merge else mark
            size = f'length(CAST("{column}" AS BLOB))'
        # Metadata has its own etag (metadata_version), so that progress updates never break a
        # conditional metadata write; config is conditional on the job's etag.
        etag_column = "metadata_version" if column == "metadata" else "version"
        condition = f"id = {mark}" + (f" AND {etag_column} = {mark}" if with_etag else "")
        also = ", metadata_version = metadata_version + 1" if column == "metadata" else ""
        return (f'UPDATE jobs SET "{column}" = {value}, version = version + 1{also}, updated_at = {mark} '
                f"WHERE {condition} RETURNING {SELECTED}, {size}")

    def update_row(self, conn: Connection, job_id: str, values: Mapping[str, Any], stamp: datetime,
                   version: int | None) -> dict[str, Any] | None:
        """UPDATE jobs SET <values>, version + 1, updated_at WHERE id [AND version] RETURNING the row,
        inside `conn`'s transaction; None when no row matched."""
        columns = tuple(sorted(values))
        key = (columns, version is not None)
        sql = self._updates.get(key)
        if sql is None:
            mark = self._mark
            assignments = [f'"{name}" = {mark}::jsonb' if self.postgres and name in JSON_COLUMNS
                           else f'"{name}" = {mark}' for name in columns]
            condition = f"id = {mark}" + (f" AND version = {mark}" if version is not None else "")
            sql = self._updates[key] = (f"UPDATE jobs SET {', '.join(assignments)}, version = version + 1, "
                                        f"updated_at = {mark} WHERE {condition} RETURNING {SELECTED}")
        parameters = [self._parameter(name, values[name]) for name in columns]
        parameters += [self._timestamp(stamp), job_id]
        if version is not None:
            parameters.append(version)
        cursor = driver.cursor(conn)
        try:
            cursor.execute(sql, parameters)
            values_row = cursor.fetchone()
        finally:
            cursor.close()
        return self._row(values_row) if values_row is not None else None

    def insert_new(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """INSERT ... ON CONFLICT (parent_id, dedup_key) DO NOTHING for rows of one shape, inside `conn`'s
        transaction; returns the dedup keys that were new."""
        if not rows:
            return set()
        columns = tuple(rows[0])
        mark = self._mark
        one = "(" + ", ".join(f"{mark}::jsonb" if self.postgres and name in JSON_COLUMNS else mark
                              for name in columns) + ")"
        names = ", ".join(f'"{name}"' for name in columns)
        inserted: set[str] = set()
        cursor = driver.cursor(conn)
        try:
            for start in range(0, len(rows), INSERT_CHUNK_ROWS):  # (SQLite takes at most 32,766 parameters)
                chunk = rows[start:start + INSERT_CHUNK_ROWS]
                cursor.execute(f"INSERT INTO jobs ({names}) VALUES {', '.join([one] * len(chunk))} "
                               "ON CONFLICT (parent_id, dedup_key) DO NOTHING RETURNING dedup_key",
                               [self._parameter(name, row[name]) for row in chunk for name in columns])
                inserted.update(key for (key,) in cursor.fetchall())
        finally:
            cursor.close()
        return inserted

    def _parameter(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in JSON_COLUMNS:
            return json.dumps(value)
        if name in TIME_COLUMNS:
            return self._timestamp(value)
        return value

    def _update_json_postgres(self, job_id: str, column: str, text: str, merge: bool, version: int | None,
                              stamp: datetime) -> tuple[dict[str, Any], int] | None:
        """On PostgreSQL the size limit is part of the statement, so it runs alone in autocommit: one round
        trip instead of BEGIN, UPDATE and COMMIT (the merge is computed twice, ~20 us of the database's
        CPU, against two round trips saved). When nothing matched, one read says why."""
        value = f'quaero_json_merge_patch("{column}", %s::jsonb)' if merge else "%s::jsonb"
        etag_column = "metadata_version" if column == "metadata" else "version"
        also = ", metadata_version = metadata_version + 1" if column == "metadata" else ""
        condition = "id = %s" + (f" AND {etag_column} = %s" if version is not None else "")
        update = (f'UPDATE jobs SET "{column}" = {value}, version = version + 1{also}, updated_at = %s '
                  f"WHERE {condition} AND octet_length(({value})::text) <= {MAX_JSON_BYTES} "
                  f'RETURNING {SELECTED}, octet_length("{column}"::text)')
        parameters: list[Any] = [text, stamp, job_id] + ([version] if version is not None else []) + [text]
        check = f"SELECT {etag_column}, octet_length(({value})::text) FROM jobs WHERE id = %s"
        for _attempt in (1, 2, 3):
            connection = self.db.read_engine.raw_connection()  # the autocommit pool
            try:
                with contextlib.closing(connection.cursor()) as cursor:
                    cursor.execute(update, parameters)
                    values = cursor.fetchone()
                    if values is not None:
                        return self._row(values[:-1]), int(values[-1])
                    cursor.execute(check, [text, job_id])
                    found = cursor.fetchone()
            except Exception as error:
                # Not retried here: in autocommit a dropped connection may have committed the update.
                if self._is_disconnect(error):
                    self._after_disconnect(connection, error)
                raise
            finally:
                connection.close()
            if found is None or (version is not None and found[0] != version):
                return None  # unknown id or stale etag: the caller tells which
            if int(found[1]) > MAX_JSON_BYTES:
                return {}, int(found[1])
            # It would fit now: another write changed the job between the two statements. Again.
        raise Aborted(Reason.WRITE_CONFLICT, f"job {job_id}: other writes changed its {column} three times while "
                      "this update was checked; retry it", column, {"job_id": job_id})

    def _timestamp(self, moment: datetime) -> Any:
        return driver.timestamp(moment, self.postgres)

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

    def _is_disconnect(self, error: BaseException) -> bool:
        return self.postgres and isinstance(error, self.db.write_engine.dialect.loaded_dbapi.OperationalError)

    def _after_disconnect(self, connection: Any, error: BaseException) -> None:
        # The server dropped us (restart, failover): this connection and every pooled one are gone;
        # SQLAlchemy's own paths react the same way (the whole pool is replaced).
        connection.invalidate(error)
        self.db.write_engine.dispose(close=False)
        if self.db.read_engine is not self.db.write_engine:
            self.db.read_engine.dispose(close=False)

    def get(self, job_id: str) -> dict[str, Any] | None:
        for attempt in (1, 2):
            connection = self.db.read_engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(self._select, (job_id,))
                values = cursor.fetchone()
                cursor.close()
                connection.rollback()  # end the read snapshot before the connection goes back
                return self._row(values) if values is not None else None
            except Exception as error:
                if not self._is_disconnect(error):
                    raise
                self._after_disconnect(connection, error)
                if attempt == 2:
                    raise
            finally:
                connection.close()
        raise AssertionError("unreachable")

    def update_json(self, job_id: str, column: str, text: str, merge: bool, version: int | None,
                    stamp: datetime) -> tuple[dict[str, Any], int] | None:
        """One UPDATE ... RETURNING; returns (row, serialised size of the column), or None when no row
        matched (unknown id or stale version). A result over 64 KiB is not written ({} and its size)."""
        if self.postgres:
            return self._update_json_postgres(job_id, column, text, merge, version, stamp)
        parameters: list[Any] = [text, self._timestamp(stamp), job_id]
        if version is not None:
            parameters.append(version)
        sql = self._update_sql(column, merge, version is not None)
        connection = self.db.write_engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, parameters)
            except Exception as error:
                if not self._is_disconnect(error):
                    raise
                # Dead before the statement ran: nothing was written, so one retry is safe.
                self._after_disconnect(connection, error)
                connection.close()
                connection = self.db.write_engine.raw_connection()
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
            if self._is_disconnect(error):
                self._after_disconnect(connection, error)
            else:
                connection.rollback()
            raise
        finally:
            connection.close()
