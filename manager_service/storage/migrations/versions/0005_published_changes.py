"""Change notices are published by the managers (pg_changes.ChangePublisher: one NOTIFY per burst of
writes) instead of a trigger after every UPDATE of jobs, and metadata merges are an expression of jsonb
operators (jobs_sql.merge_patch_sql) instead of a plpgsql function: both cost the database CPU on every
write (~75 us and ~100 us twice). The trigger and both functions go.

Revision ID: 0005
Revises: 0004
"""
import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _sql_of(module_file: str, name: str) -> str:
    """SQL text kept by an earlier revision (its module name starts with a digit: loaded by path)."""
    spec = importlib.util.spec_from_file_location(f"quaero_revision_{name}", Path(__file__).with_name(module_file))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(getattr(module, name))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text("DROP TRIGGER IF EXISTS quaero_jobs_changed ON jobs"))
    op.execute(sa.text("DROP FUNCTION IF EXISTS quaero_notify_job_changes()"))
    op.execute(sa.text("DROP FUNCTION IF EXISTS quaero_json_merge_patch(jsonb, jsonb)"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(_sql_of("0001_initial.py", "PG_MERGE_PATCH")))
    op.execute(sa.text(_sql_of("0004_change_notices.py", "FUNCTION")))
    op.execute(sa.text("CREATE TRIGGER quaero_jobs_changed AFTER UPDATE ON jobs REFERENCING NEW TABLE AS "
                       "quaero_changed FOR EACH STATEMENT EXECUTE FUNCTION quaero_notify_job_changes()"))
