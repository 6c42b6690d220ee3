"""Retries and long URLs: jobs.not_before (a child given back for a retry waits until then);
documents unique by url_hash instead of url, so URLs of any length fit on PostgreSQL too, and
documents.text_truncated.

Revision ID: 0002
Revises: 0001
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def _documents(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("url_hash", sa.String(64), nullable=False),
        sa.Column("final_url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("content_type", sa.String(255), nullable=False, server_default=""),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("parent_job_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("fetched_at", Timestamp, nullable=False),
        sa.Column("text_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("url_hash", name="uq_documents_url_hash"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("jobs", sa.Column("not_before", Timestamp, nullable=True))
    # The documents table is rebuilt rather than altered: SQLite cannot drop the unnamed unique
    # constraint on url in place.
    metadata = sa.MetaData()
    old = sa.Table("documents", metadata, autoload_with=bind)
    new = _documents(metadata, "documents_0002")
    new.create(bind)
    columns = [c.name for c in old.c]
    batch: list[dict] = []
    for row in bind.execute(sa.select(old)).mappings():
        values = {name: row[name] for name in columns}
        values["url_hash"] = hashlib.sha256(row["url"].encode()).hexdigest()
        batch.append(values)
        if len(batch) >= 500:
            bind.execute(sa.insert(new), batch)
            batch = []
    if batch:
        bind.execute(sa.insert(new), batch)
    op.drop_table("documents")
    op.rename_table("documents_0002", "documents")
    op.create_index("ix_documents_parent", "documents", ["parent_job_id", "fetched_at"])


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible: documents are now keyed by url_hash")
