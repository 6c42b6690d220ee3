"""PostgreSQL keeps each content's search vector in its row (STORAGE MAIN: compressed, out of line only as a
last resort) rather than in TOAST: a search reads up to 1,000 of them, and fetching each from the TOAST
table doubled a query's time (10.7 -> 5.5 ms for a word most documents hold, 100,000 documents). Contents
stored before keep their layout until they are written again. Nothing on SQLite.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE contents ALTER COLUMN search SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE contents ALTER COLUMN search SET STORAGE EXTENDED")
