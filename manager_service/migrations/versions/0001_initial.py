"""Initial schema: jobs, job logs, credentials, job definitions, documents.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from manager_service import models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# RFC 7396 JSON Merge Patch for jsonb. PostgreSQL's || is only a shallow merge; SQLite has json_patch.
PG_MERGE_PATCH = """
CREATE OR REPLACE FUNCTION quaero_json_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  result jsonb;
  k text;
  v jsonb;
BEGIN
  IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
    RETURN patch;
  END IF;
  IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
    result := '{}'::jsonb;
  ELSE
    result := target;
  END IF;
  FOR k, v IN SELECT key, value FROM jsonb_each(patch) LOOP
    IF jsonb_typeof(v) = 'null' THEN
      result := result - k;
    ELSE
      result := result || jsonb_build_object(k, quaero_json_merge_patch(result -> k, v));
    END IF;
  END LOOP;
  RETURN result;
END
$$;
"""


def upgrade() -> None:
    bind = op.get_bind()
    models.metadata_obj.create_all(bind)
    if bind.dialect.name == "postgresql":
        op.execute(sa.text(PG_MERGE_PATCH))


def downgrade() -> None:
    bind = op.get_bind()
    models.metadata_obj.drop_all(bind)
    if bind.dialect.name == "postgresql":
        op.execute(sa.text("DROP FUNCTION IF EXISTS quaero_json_merge_patch(jsonb, jsonb)"))
