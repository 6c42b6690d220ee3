"""The API contract (issue 8): a metadata etag of its own (jobs.metadata_version), request ids scoped per
method and caller with the request's fingerprint (jobs.request_hash), definition etags
(job_definitions.version), and documents that belong to their run: unique by (parent_job_id,
url_hash) instead of url_hash, with an index for "the latest version of this URL".

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("metadata_version", sa.BigInteger, nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("request_hash", sa.String(64), nullable=True))
    op.add_column("job_definitions", sa.Column("version", sa.BigInteger, nullable=False, server_default="1"))
    with op.batch_alter_table("documents") as batch:  # SQLite rebuilds the table; PostgreSQL alters it
        batch.drop_constraint("uq_documents_url_hash", type_="unique")
        batch.create_unique_constraint("uq_documents_run_url", ["parent_job_id", "url_hash"])
    op.create_index("ix_documents_url_latest", "documents", ["url_hash", "fetched_at"])


def downgrade() -> None:
    raise NotImplementedError("0003 is not reversible: documents of several runs may share a URL now")
