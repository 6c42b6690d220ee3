"""The database schema (SQLAlchemy Core). Alembic migrations in migrations/ create it."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

# jsonb on PostgreSQL (merge runs in the database there), JSON text on SQLite (json_patch).
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

metadata_obj = sa.MetaData()
PENDING_CHILD = "status = 'pending' AND parent_id IS NOT NULL"  # (ix_jobs_pending; the lease's query says it so)

jobs = sa.Table(
    "jobs", metadata_obj,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("parent_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True),
    sa.Column("type", sa.String(64), nullable=False, server_default=""),
    sa.Column("name", sa.String(512), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config", Json, nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("result", Json, nullable=False),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("error_reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("progress_current", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("progress_total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("children_failed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    # "<method>/<role>/<request_id>": idempotency keys are scoped per method and caller (migration 0003),
    # with the SHA-256 of the request they came with.
    sa.Column("request_id", sa.String(128), nullable=True, unique=True),
    sa.Column("dedup_key", sa.String(2048), nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", Timestamp, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # A pending child given back for a retry is not leased before this (migration 0002).
    sa.Column("not_before", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    # The metadata etag: moves only when metadata does (migration 0003).
    sa.Column("metadata_version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("request_hash", sa.String(64), nullable=True),
    # A run (top-level job) of a job definition: its id, the run before it (the newest completed one of the
    # definition when it was created), and what its pages were against their latest stored versions
    # (migration 0009).
    sa.Column("definition_id", sa.String(128), nullable=True),
    sa.Column("previous_run_id", sa.String(36), nullable=True),
    sa.Column("docs_new", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("docs_changed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("docs_unchanged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("docs_gone", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("parent_id", "dedup_key", name="uq_jobs_parent_dedup"),
    sa.Index("ix_jobs_parent_status", "parent_id", "status"),
    sa.Index("ix_jobs_lease_expiry", "status", "lease_expires_at"),
    # Migration 0007: every ordered read has an index in its own order, and none invites the planner to
    # walk another: the lease reads only pending children (a partial index, as small as the queue), top-level
    # listings only top-level jobs, a parent's listing only its children. (PostgreSQL leased through an index
    # of every job's created_at once it had statistics, passing every finished child first: 7 ms a lease at
    # 40,000 finished and 50,000 pending, against 0.02 ms.)
    sa.Index("ix_jobs_pending", "status", "created_at", "id", sqlite_where=sa.text(PENDING_CHILD),
             postgresql_where=sa.text(PENDING_CHILD)),
    sa.Index("ix_jobs_top_created", "created_at", "id", sqlite_where=sa.text("parent_id IS NULL"),
             postgresql_where=sa.text("parent_id IS NULL")),
    sa.Index("ix_jobs_parent_created", "parent_id", "created_at", "id"),
    sa.Index("ix_jobs_definition_runs", "definition_id", "created_at", sqlite_where=sa.text("parent_id IS NULL"),
             postgresql_where=sa.text("parent_id IS NULL")),
)

job_logs = sa.Table(
    "job_logs", metadata_obj,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_job_logs_job", "job_id", "id"),
)

credentials = sa.Table(
    "credentials", metadata_obj,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("site_domain", sa.String(255), nullable=False),
    sa.Column("base_url", sa.String(2048), nullable=False, server_default=""),
    sa.Column("user_agent", sa.String(1024), nullable=False, server_default=""),
    # AES-GCM ciphertext of the cookies as JSON; cookie_index holds everything but the values.
    sa.Column("cookies_encrypted", sa.LargeBinary, nullable=False),
    sa.Column("cookie_index", Json, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # The last time a crawl's response refreshed a stored cookie, and its run (migration 0008).
    sa.Column("refreshed_at", Timestamp, nullable=True),
    sa.Column("refreshed_by", sa.String(36), nullable=True),
)

# A run's session (migration 0008): the cookies its pages' responses set, over its credentials. One row
# per run holds the version executors compare; one row per cookie, its value encrypted as credentials' are.
run_sessions = sa.Table(
    "run_sessions", metadata_obj,
    sa.Column("parent_job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

run_cookies = sa.Table(
    "run_cookies", metadata_obj,
    sa.Column("parent_job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("domain", sa.String(255), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("name", sa.String(4096), primary_key=True),
    sa.Column("value_encrypted", sa.LargeBinary, nullable=False),
    sa.Column("host_only", sa.Boolean, nullable=False),
    sa.Column("secure", sa.Boolean, nullable=False),
    sa.Column("http_only", sa.Boolean, nullable=False),
    sa.Column("same_site", sa.String(16), nullable=False, server_default=""),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("removed", sa.Boolean, nullable=False),
    sa.Column("set_by_url", sa.Text, nullable=False),
    sa.Column("set_at", Timestamp, nullable=False),
)

job_definitions = sa.Table(
    "job_definitions", metadata_obj,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False, server_default=""),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("auth_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("spec", Json, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),  # the etag (migration 0003)
)

# What a page held, stored once however many runs' documents refer to it (migration 0009): a page that
# did not change since its latest stored version gets a document of its own that refers to the same
# content. `links` (JSON) are the page's links as found, so a run that is told 304 Not Modified still
# follows them. The search index holds each content's words: contents_fts (FTS5) on SQLite, the
# `search` tsvector column on PostgreSQL (both written by search.SearchIndex, not declared here).
contents = sa.Table(
    "contents", metadata_obj,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("text_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("links", sa.Text, nullable=False, server_default=""),
    sa.Column("stored_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", Timestamp, nullable=False),
)

# A document is one run's record of one URL (unique by run and the SHA-256 of the URL: URLs of any
# length). Its text is its content's. `kind` says what it was against the latest stored version of the
# URL in the same definition (new, changed, unchanged); `latest` marks that version per definition and
# URL (search's latest_only, and the validators the next run sends).
documents = sa.Table(
    "documents", metadata_obj,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("url_hash", sa.String(64), nullable=False),
    sa.Column("final_url", sa.Text, nullable=False),
    sa.Column("content_id", sa.BigInteger, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("content_type", sa.String(255), nullable=False, server_default=""),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("parent_job_id", sa.String(36), nullable=False, server_default=""),
    sa.Column("definition_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("auth_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("kind", sa.String(16), nullable=False, server_default="new"),
    sa.Column("etag", sa.String(512), nullable=False, server_default=""),
    sa.Column("last_modified", sa.String(64), nullable=False, server_default=""),
    sa.Column("latest", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("fetched_at", Timestamp, nullable=False),
    sa.UniqueConstraint("parent_job_id", "url_hash", name="uq_documents_run_url"),
    sa.Index("ix_documents_parent", "parent_job_id", "fetched_at"),
    sa.Index("ix_documents_url_latest", "url_hash", "fetched_at"),
    sa.Index("ix_documents_content", "content_id"),
    sa.Index("ix_documents_lineage", "definition_id", "url_hash", sqlite_where=sa.text("latest"),
             postgresql_where=sa.text("latest")),
)

# A schedule's ticks (migration 0010): one row per definition and tick, whoever wrote it first. The
# primary key is what makes a tick start at most one run, however many managers look at once; the row
# is written in the transaction that starts its run. status: started, skipped (overlap), buffered (waits
# for the running run: buffer_one), missed (older than the catch-up window; `count` ticks up to this one),
# paused (likewise).
schedule_ticks = sa.Table(
    "schedule_ticks", metadata_obj,
    sa.Column("definition_id", sa.String(128), primary_key=True),
    sa.Column("tick_at", Timestamp, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(36), nullable=True),
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("recorded_at", Timestamp, nullable=False),
    sa.Column("recorded_by", sa.String(128), nullable=False, server_default=""),
    sa.Index("ix_schedule_ticks_buffered", "definition_id", sqlite_where=sa.text("status = 'buffered'"),
             postgresql_where=sa.text("status = 'buffered'")),
)
