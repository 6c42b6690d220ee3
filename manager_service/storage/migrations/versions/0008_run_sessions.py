"""Run sessions: the cookies a run's responses set, kept where every executor sees them (run_sessions,
run_cookies: values encrypted), and when a crawl last refreshed stored credentials (credentials.
refreshed_at, refreshed_by).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("credentials", sa.Column("refreshed_at", Timestamp, nullable=True))
    op.add_column("credentials", sa.Column("refreshed_by", sa.String(36), nullable=True))
    op.create_table(
        "run_sessions",
        sa.Column("parent_job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "run_cookies",
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


def downgrade() -> None:
    op.drop_table("run_cookies")
    op.drop_table("run_sessions")
    op.drop_column("credentials", "refreshed_by")
    op.drop_column("credentials", "refreshed_at")
