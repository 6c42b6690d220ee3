"""Recurring crawls: a document's text moves to `contents`, stored once however many runs refer to it,
with a search index (FTS5 on SQLite, tsvector + GIN on PostgreSQL); documents gain their definition,
credentials, kind (new/changed/unchanged), validators (ETag, Last-Modified) and the `latest` mark; runs
gain their definition, the run before them and their document counts.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

from manager_service.storage.search_text import indexed

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
TOP = "parent_id IS NULL"
BATCH = 500


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for name in ("docs_new", "docs_changed", "docs_unchanged", "docs_gone"):
        op.add_column("jobs", sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("definition_id", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("previous_run_id", sa.String(36), nullable=True))
    definition = "config->>'job_definition_id'" if postgres else "json_extract(config, '$.job_definition_id')"
    op.execute(f"UPDATE jobs SET definition_id = {definition} WHERE {TOP}")
    op.create_index("ix_jobs_definition_runs", "jobs", ["definition_id", "created_at"], sqlite_where=sa.text(TOP),
                    postgresql_where=sa.text(TOP))

    op.create_table(
        "contents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("text_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("links", sa.Text, nullable=False, server_default=""),
        sa.Column("stored_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    if postgres:
        op.execute("ALTER TABLE contents ADD COLUMN search tsvector NOT NULL DEFAULT ''::tsvector")
        op.execute("CREATE INDEX ix_contents_search ON contents USING gin (search)")
    else:
        op.execute("CREATE VIRTUAL TABLE contents_fts USING fts5(title, body, content='', "
                   "tokenize='unicode61 remove_diacritics 0')")

    for column in (sa.Column("content_id", sa.BigInteger, nullable=True),
                   sa.Column("definition_id", sa.String(128), nullable=False, server_default=""),
                   sa.Column("auth_id", sa.String(64), nullable=False, server_default=""),
                   sa.Column("kind", sa.String(16), nullable=False, server_default="new"),
                   sa.Column("etag", sa.String(512), nullable=False, server_default=""),
                   sa.Column("last_modified", sa.String(64), nullable=False, server_default=""),
                   sa.Column("latest", sa.Boolean, nullable=False, server_default=sa.true())):
        op.add_column("documents", column)
    # Every existing document gets a content of its own (numbered in document id order).
    op.execute("INSERT INTO contents (id, content_hash, title, text, text_truncated, links, stored_bytes, created_at) "
               "SELECT ROW_NUMBER() OVER (ORDER BY id), content_hash, title, text, text_truncated, '', "
               "length(title) + length(text), fetched_at FROM documents")
    op.execute("UPDATE documents SET content_id = (SELECT n FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n "
               "FROM documents) AS numbered WHERE numbered.id = documents.id)")
    if postgres:
        op.execute("SELECT setval(pg_get_serial_sequence('contents', 'id'), COALESCE(MAX(id), 0) + 1, false) "
                   "FROM contents")
    op.execute("UPDATE documents SET definition_id = COALESCE((SELECT jobs.definition_id FROM jobs "
               "WHERE jobs.id = documents.parent_job_id), '')")
    op.execute("UPDATE documents SET latest = (id = (SELECT newer.id FROM documents AS newer "
               "WHERE newer.definition_id = documents.definition_id AND newer.url_hash = documents.url_hash "
               "ORDER BY newer.fetched_at DESC, newer.id DESC LIMIT 1))")
    _index_existing(bind, postgres)

    with op.batch_alter_table("documents") as batch:
        batch.alter_column("content_id", existing_type=sa.BigInteger, nullable=False)
        batch.drop_column("title")
        batch.drop_column("text")
        batch.drop_column("text_truncated")
    op.create_index("ix_documents_content", "documents", ["content_id"])
    op.create_index("ix_documents_lineage", "documents", ["definition_id", "url_hash"], sqlite_where=sa.text("latest"),
                    postgresql_where=sa.text("latest"))


def _index_existing(bind: sa.engine.Connection, postgres: bool) -> None:
    """The search index of the contents made above, in batches (words are split in Python: search_text)."""
    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, title, text FROM contents WHERE id > :last ORDER BY id LIMIT :n"),
                            {"last": last, "n": BATCH}).all()
        if not rows:
            return
        for content_id, title, text in rows:
            title_words, text_words = indexed(title, text)
            if postgres:
                bind.execute(sa.text("UPDATE contents SET search = setweight(to_tsvector('simple', :t), 'A') || "
                                     "setweight(to_tsvector('simple', :b), 'D') WHERE id = :id"),
                             {"t": title_words, "b": text_words, "id": content_id})
            else:
                bind.execute(sa.text("INSERT INTO contents_fts (rowid, title, body) VALUES (:id, :t, :b)"),
                             {"t": title_words, "b": text_words, "id": content_id})
        last = rows[-1][0]


def downgrade() -> None:
    """Each document gets its text back (a copy per document, as before 0009)."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("documents", sa.Column("title", sa.Text, nullable=False, server_default=""))
    op.add_column("documents", sa.Column("text", sa.Text, nullable=False, server_default=""))
    op.add_column("documents", sa.Column("text_truncated", sa.Boolean, nullable=False, server_default=sa.false()))
    for column in ("title", "text", "text_truncated"):
        op.execute(f"UPDATE documents SET {column} = (SELECT contents.{column} FROM contents "
                   "WHERE contents.id = documents.content_id)")
    op.drop_index("ix_documents_lineage", table_name="documents")
    op.drop_index("ix_documents_content", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        for column in ("content_id", "definition_id", "auth_id", "kind", "etag", "last_modified", "latest"):
            batch.drop_column(column)
    if not postgres:
        op.execute("DROP TABLE contents_fts")
    op.drop_table("contents")
    op.drop_index("ix_jobs_definition_runs", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("previous_run_id", "definition_id", "docs_gone", "docs_unchanged", "docs_changed", "docs_new"):
            batch.drop_column(column)
