"""Schedules: one row per definition and tick (schedule_ticks), written in the transaction that starts the
tick's run: the primary key lets each tick start at most one run, however many managers look.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
BUFFERED = "status = 'buffered'"


def upgrade() -> None:
    op.create_table(
        "schedule_ticks",
        sa.Column("definition_id", sa.String(128), primary_key=True),
        sa.Column("tick_at", Timestamp, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("recorded_at", Timestamp, nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False, server_default=""),
    )
    op.create_index("ix_schedule_ticks_buffered", "schedule_ticks", ["definition_id"],
                    sqlite_where=sa.text(BUFFERED), postgresql_where=sa.text(BUFFERED))


def downgrade() -> None:
    op.drop_index("ix_schedule_ticks_buffered", table_name="schedule_ticks")
    op.drop_table("schedule_ticks")
