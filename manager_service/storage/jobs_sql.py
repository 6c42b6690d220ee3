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
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from quaero.errors import Aborted, Reason

from . import driver
from .db import Database
from .jsonvalues import MAX_JSON_BYTES, dumps, loads
from .models import jobs

COLUMNS = [column.name for column in jobs.c]
JSON_COLUMNS = ("config", "metadata", "result")
TIME_COLUMNS = ("lease_expires_at", "not_before", "created_at", "started_at", "finished_at", "updated_at")
SELECTED = ", ".join(f'"{name}"' for name in COLUMNS)
PG_TYPES = {column.name: column.type.compile(dialect=postgresql.dialect()) for column in jobs.c}
INSERT_CHUNK_ROWS = 500


@functools.lru_cache(maxsize=64)
def _iso(moment: datetime) -> str:
    # (Cached: a batch of new children repeats one moment in several columns of every row.)
    return moment.isoformat()


def merge_patch_sql(target: str, patch: Mapping[str, Any], parameters: dict[str, Any], name: str) -> str:
    """RFC 7396: `patch` merged into the jsonb SQL expression `target`, as one PostgreSQL expression of
    built-in operators, its values in `parameters` (named from `name`). The text depends only on which
    keys of the patch hold objects, so a writer's repeated patches reuse one prepared statement. It
    replaced a recursive plpgsql function, whose loop over jsonb_each cost ~100 us of the database's CPU
    per call, twice per merge (see README, Benchmarks)."""
    merged = f"(CASE WHEN jsonb_typeof({target}) = 'object' THEN {target} ELSE '{{}}'::jsonb END)"
    removed = [key for key, value in patch.items() if value is None]
    replaced = {key: value for key, value in patch.items() if value is not None and not isinstance(value, dict)}
    if removed:
        parameters[f"{name}_removed"] = removed
        merged = f"({merged} - %({name}_removed)s::text[])"
    if replaced:
        parameters[f"{name}_set"] = dumps(replaced)
        merged = f"({merged} || %({name}_set)s::jsonb)"
    objects = [(key, value) for key, value in patch.items() if isinstance(value, dict)]
    for index, (key, value) in enumerate(objects):
        key_name = f"{name}_{index}"
        parameters[key_name] = key
        inner = merge_patch_sql(f"({target} -> %({key_name})s::text)", value, parameters, key_name)
        merged = f"({merged} || jsonb_build_object(%({key_name})s::text, {inner}))"
    return merged


class JobsSql:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.dialect == "postgresql"
        mark = driver.placeholder(self.postgres)
        self._mark = mark
        # GetJob's read: on PostgreSQL through libpq (run_prepared), whose mark is $1.
        self._select = f"SELECT {SELECTED} FROM jobs WHERE id = {'$1' if self.postgres else mark}"
        self._updates: dict[tuple[tuple[str, ...], bool], str] = {}
        # GetJob's read, and the merge on PostgreSQL (autocommit there): connections kept out of the pool.
        self._hot = db.hot_cursors(db.read_engine)
        self._numbered_texts: dict[str, tuple[str, list[str]]] = {}

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

    def end_rows(self, conn: Connection, ended: Sequence[Any], stamp: datetime) -> None:
        """Several jobs' ends (status, finish time, error, result: records.Job as they become) in one
        statement, inside `conn`'s transaction: UPDATE ... FROM unnest(...) on PostgreSQL (one statement for
        all: pipelined statements still cost psycopg a round of Python each), executemany on SQLite."""
        cursor = driver.cursor(conn)
        try:
            if self.postgres:
                cursor.execute(
                    "UPDATE jobs SET status = v.status, finished_at = v.finished_at, lease_expires_at = NULL, "
                    "error = v.error, error_reason = v.error_reason, result = v.result, version = jobs.version + 1, "
                    "updated_at = %s FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[], %s::text[], "
                    "%s::varchar[], %s::jsonb[]) AS v(id, status, finished_at, error, error_reason, result) "
                    "WHERE jobs.id = v.id",
                    [stamp, [job.id for job in ended], [job.status.value for job in ended],
                     [job.finished_at for job in ended], [job.error for job in ended],
                     [job.error_reason for job in ended], [dumps(job.result) for job in ended]])
                return
            mark, at = self._mark, self._timestamp(stamp)
            cursor.executemany(
                f"UPDATE jobs SET status = {mark}, finished_at = {mark}, lease_expires_at = NULL, error = {mark}, "
                f"error_reason = {mark}, result = {mark}, version = version + 1, updated_at = {mark} WHERE id = {mark}",
                [(job.status.value, self._timestamp(job.finished_at), job.error, job.error_reason, dumps(job.result), at,
                  job.id) for job in ended])
        finally:
            cursor.close()

    def insert_new(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """INSERT ... ON CONFLICT (parent_id, dedup_key) DO NOTHING for rows of one shape, inside `conn`'s
        transaction; returns the dedup keys that were new."""
        if not rows:
            return set()
        columns = tuple(rows[0])
        if self.postgres:
            return self._insert_unnest(conn, columns, rows)
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

    def _insert_unnest(self, conn: Connection, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> set[str]:
        """PostgreSQL: the rows as one JSON array, read by json_to_recordset, in INSERT ... SELECT. The
        statement's text depends only on the columns, so psycopg converts it once (a VALUES list of 500 rows
        was a new text of 7,500 placeholders to parse in Python on every call), and the rows are one text
        written by orjson: an array per column (unnest) was dumped element by element in Python by
        psycopg, a sixth of the manager's CPU per crawled page on PostgreSQL."""
        record = ", ".join(f'"{name}" {PG_TYPES[name]}' for name in columns)
        names = ", ".join(f'"{name}"' for name in columns)
        times = [name for name in columns if name in TIME_COLUMNS]
        if times:
            rows = [{**row, **{name: _iso(row[name]) for name in times if row[name] is not None}} for row in rows]
        cursor = driver.cursor(conn)
        try:
            cursor.execute(f"INSERT INTO jobs ({names}) SELECT {names} FROM json_to_recordset(%s::json) AS r({record}) "
                           "ON CONFLICT (parent_id, dedup_key) DO NOTHING RETURNING dedup_key", [dumps(rows)])
            return {key for (key,) in cursor.fetchall()}
        finally:
            cursor.close()

    def _parameter(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in JSON_COLUMNS:
            return dumps(value)
        if name in TIME_COLUMNS:
            return self._timestamp(value)
        return value

    def _timestamp(self, moment: datetime) -> Any:
        return driver.timestamp(moment, self.postgres)

    def _row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(COLUMNS, values, strict=False))
        if not self.postgres:
            for name in JSON_COLUMNS:
                text = row[name]
                row[name] = loads(text) if text is not None else None
            for name in TIME_COLUMNS:
                text = row[name]
                if text is not None:
                    row[name] = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return row

    def _is_disconnect(self, error: BaseException) -> bool:
        return self.postgres and isinstance(error, self.db.write_engine.dialect.loaded_dbapi.OperationalError)

    def _after_disconnect(self, error: BaseException) -> None:
        # The server dropped us (restart, failover): every pooled and idle hot connection is gone too;
        # SQLAlchemy's own paths react the same way (the whole pool is replaced).
        self._hot.drop_idle()
        self.db.write_engine.dispose(close=False)
        if self.db.read_engine is not self.db.write_engine:
            self.db.read_engine.dispose(close=False)

    def get(self, job_id: str) -> dict[str, Any] | None:
        for attempt in (1, 2):
            try:
                with self._hot_connection() as hot:
                    if self.postgres:
                        values = driver.run_prepared(hot, self._select, (job_id,))
                    else:
                        hot.cursor.execute(self._select, (job_id,))
                        values = hot.cursor.fetchone()  # (the only row: the statement is done, its snapshot ended)
            except Exception as error:
                if attempt == 2 or not self._is_disconnect(error):
                    raise
                continue  # (a read is safe to run again, on a new connection)
            return self._row(values) if values is not None else None
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _hot_connection(self) -> Iterator[driver.Hot]:
        """One of the connections kept out of the pool, given back after the call; after a failure it is
        not used again, and after a disconnect neither is any other."""
        hot = self._hot.take()
        try:
            yield hot
        except Exception as error:
            self._hot.discard(hot, error)
            if self._is_disconnect(error):
                self._after_disconnect(error)
            raise
        self._hot.give_back(hot)

    def update_json(self, job_id: str, column: str, patch: dict[str, Any], text: str, merge: bool,
                    version: int | None, stamp: datetime) -> dict[str, Any] | int | None:
        """Merges `patch` (RFC 7396) into the column, or replaces it with `text` (the patch's JSON), in one
        statement that commits alone: one round trip on PostgreSQL, and on SQLite no BEGIN and COMMIT
        around it. Returns the updated row; else the size in bytes the column would have had, when over
        64 KiB (nothing written); else None (unknown id or stale version: one read to find out)."""
        named = self._named
        parameters: dict[str, Any] = {"id": job_id, "stamp": self._timestamp(stamp)}
        if not merge:
            parameters["value"] = text
            value = named("value") + ("::jsonb" if self.postgres else "")
        elif self.postgres:
            value = merge_patch_sql(f'"{column}"', patch, parameters, "p")
        else:
            parameters["value"] = text
            value = f'json_patch("{column}", :value)'
        size = f"octet_length(({value})::text)" if self.postgres else f"length(CAST({value} AS BLOB))"
        # Metadata has its own etag (metadata_version), so that progress updates never break a
        # conditional metadata write; config is conditional on the job's etag.
        etag_column = "metadata_version" if column == "metadata" else "version"
        condition = f"id = {named('id')}"
        if version is not None:
            parameters["version"] = version
            condition += f" AND {etag_column} = {named('version')}"
        also = ", metadata_version = metadata_version + 1" if column == "metadata" else ""
        # (The new value is computed twice, for the size check and the SET: a few microseconds of the
        # database's own CPU, against a transaction around the statement.)
        update = (f'UPDATE jobs SET "{column}" = {value}, version = version + 1{also}, updated_at = {named("stamp")} '
                  f"WHERE {condition} AND {size} <= {MAX_JSON_BYTES} RETURNING {SELECTED}")
        check = f"SELECT {etag_column}, {size} FROM jobs WHERE id = {named('id')}"
        for _attempt in (1, 2, 3):
            with self._single_statements() as run:
                values = run(update, parameters)
                if values is not None:
                    return self._row(values)
                found = run(check, parameters)
            if found is None or (version is not None and found[0] != version):
                return None  # unknown id or stale etag: the caller tells which
            if int(found[1]) > MAX_JSON_BYTES:
                return int(found[1])
            # It would fit now: another write changed the job between the two statements. Again.
        raise Aborted(Reason.WRITE_CONFLICT, f"job {job_id}: other writes changed its {column} three times while "
                      "this update was checked; retry it", column, {"job_id": job_id})

    @contextlib.contextmanager
    def _single_statements(self) -> Iterator[Callable[[str, dict[str, Any]], Any]]:
        """run(sql, named parameters) -> the first row or None, each statement committing alone: on
        PostgreSQL a hot connection of the autocommit pool, through libpq's prepared statements; on SQLite
        the one writer connection, in autocommit for the while."""
        if self.postgres:
            # (Not run again after a disconnect: in autocommit a dropped connection may have committed it.)
            with self._hot_connection() as hot:
                yield lambda sql, parameters: driver.run_prepared(hot, *self._numbered(sql, parameters))
            return
        connection = self.db.write_engine.raw_connection()
        driver_connection = connection.driver_connection
        isolation = driver_connection.isolation_level  # type: ignore[union-attr]
        driver_connection.isolation_level = None  # type: ignore[union-attr]
        try:
            with contextlib.closing(connection.cursor()) as cursor:
                yield lambda sql, parameters: cursor.execute(sql, parameters).fetchone()
        finally:
            driver_connection.isolation_level = isolation  # type: ignore[union-attr]
            connection.close()

    def _numbered(self, sql: str, parameters: dict[str, Any]) -> tuple[str, list[str | None]]:
        # (Each statement's conversion is kept: the merge's text follows its patch's shape, a few shapes.)
        converted = self._numbered_texts.get(sql)
        if converted is None:
            converted = driver.numbered(sql)
            if len(self._numbered_texts) < 256:
                self._numbered_texts[sql] = converted
        text, names = converted
        return text, [driver.as_text(parameters[name]) for name in names]

    def _named(self, name: str) -> str:
        return driver.named_placeholder(name, self.postgres)
