"""Change notices between managers on PostgreSQL: after each UPDATE of jobs, one NOTIFY on the channel
quaero_jobs carrying the writer's application_name and the changed ids (or "*" when a statement changed
many), so that WatchJob streams on every manager hear of changes any manager made, at once. SQLite has
one manager: nothing to do.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION quaero_notify_job_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ids text;
  changed integer;
BEGIN
  SELECT count(*), string_agg(id, ' ') INTO changed, ids FROM (SELECT id FROM quaero_changed LIMIT 101) AS changed_rows;
  IF changed = 0 THEN
    RETURN NULL;
  END IF;
  IF changed > 100 THEN
    ids := '*';
  END IF;
  PERFORM pg_notify('quaero_jobs', current_setting('application_name') || ' ' || ids);
  RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(FUNCTION))
    op.execute(sa.text("CREATE TRIGGER quaero_jobs_changed AFTER UPDATE ON jobs REFERENCING NEW TABLE AS "
                       "quaero_changed FOR EACH STATEMENT EXECUTE FUNCTION quaero_notify_job_changes()"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text("DROP TRIGGER IF EXISTS quaero_jobs_changed ON jobs"))
    op.execute(sa.text("DROP FUNCTION IF EXISTS quaero_notify_job_changes()"))
