"""SQLite: every job object (config, metadata, result) in one text form, jsonvalues.dumps (UTF-8, not
\\u escapes). Jobs were created with Python's default JSON form (non-ASCII escaped) but merged and
replaced in the UTF-8 one, and SQLite's json_patch matches keys by their text: a merge could neither
replace nor delete a non-ASCII key the job was created with (it added a second one). PostgreSQL's jsonb
has one form already: nothing to do there.

Revision ID: 0006
Revises: 0005
"""
import json

import sqlalchemy as sa
from alembic import op

from manager_service.storage.jsonvalues import dumps

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("config", "metadata", "result")
CHUNK_ROWS = 500


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # Only texts holding a \u escape can differ (Python writes every other character the same either way).
    escaped = " OR ".join(f"instr({column}, '\\u') > 0" for column in COLUMNS)
    after = ""
    while True:  # in chunks of rows, by id: memory stays bounded whatever the table holds
        rows = bind.execute(sa.text(f"SELECT id, {', '.join(COLUMNS)} FROM jobs WHERE id > :after AND ({escaped}) "
                                    "ORDER BY id LIMIT :limit"), {"after": after, "limit": CHUNK_ROWS}).all()
        if not rows:
            return
        for row in rows:
            values = {column: dumps(json.loads(text)) if text is not None else None
                      for column, text in zip(COLUMNS, row[1:], strict=True)}
            bind.execute(sa.text(f"UPDATE jobs SET {', '.join(f'{c} = :{c}' for c in COLUMNS)} WHERE id = :id"),
                         {**values, "id": row[0]})
        after = rows[-1][0]


def downgrade() -> None:
    pass  # (the UTF-8 form is the one earlier revisions wrote on merges: nothing to undo)
