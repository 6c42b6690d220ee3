"""Migrations: an older database upgrades to the schema models.py describes, keeping its rows, on both
databases."""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from manager_service.storage.db import connect, migrate
from manager_service.storage.models import metadata_obj

# The search index is the database's own kind of object, written by hand (migration 0009): FTS5's tables on
# SQLite, a tsvector column and its GIN index on PostgreSQL.
SEARCH_INDEX = ("contents_fts", "ix_contents_search")


def schema_differences(conn: sa.Connection) -> list:
    def ours(difference: object) -> bool:
        text = repr(difference)
        return any(name in text for name in SEARCH_INDEX) or "'search'" in text

    return [d for d in compare_metadata(MigrationContext.configure(conn), metadata_obj) if not ours(d)]


def test_a_0002_database_upgrades_to_the_models_and_keeps_its_documents(empty_url: str) -> None:
    db = connect(empty_url)
    try:
        migrate(db, "0002")
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        with db.write_engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO jobs (id, type, name, status, config, metadata, result, version, request_id, "
                "created_at, updated_at) VALUES ('11111111-1111-4111-8111-111111111111', 'crawl', 'old', 'completed', "
                "'{\"job_definition_id\": \"wiki\"}', '{\"auth_id\": \"a\"}', '{}', 3, 'old-request', :t, :t)"),
                {"t": stamp})
            conn.execute(sa.text(
                "INSERT INTO documents (id, url, url_hash, final_url, title, text, status_code, job_id, parent_job_id, "
                "fetched_at) VALUES ('22222222-2222-4222-8222-222222222222', 'https://e.com/', 'h', 'https://e.com/', "
                "'t', 'old text', 200, 'j', '11111111-1111-4111-8111-111111111111', :t)"), {"t": stamp})
        migrate(db)
        with db.write_engine.begin() as conn:
            # (0009: the text moved to contents, and the old run is a run of its definition)
            assert conn.execute(sa.text("SELECT c.text, d.definition_id, d.kind FROM documents d JOIN contents c "
                                        "ON c.id = d.content_id")).one() == ("old text", "wiki", "new")
            assert conn.execute(sa.text("SELECT metadata_version, version, definition_id FROM jobs")).one() == (
                1, 3, "wiki")
            # a second run may now hold the same URL
            conn.execute(sa.text(
                "INSERT INTO documents (id, url, url_hash, final_url, content_id, status_code, job_id, parent_job_id, "
                "fetched_at) VALUES ('33333333-3333-4333-8333-333333333333', 'https://e.com/', 'h', 'https://e.com/', "
                "1, 200, 'j2', 'another-run', :t)"), {"t": stamp})
            differences = schema_differences(conn)
        assert differences == [], differences
        # The migrated text is searchable (both documents refer to its content).
        from manager_service.storage.paging import PageTokens
        from manager_service.storage.search import SearchIndex
        hits, _ = SearchIndex(db, PageTokens(b"k" * 32)).search("old", "", "", False, 10, "")
        assert sorted(hit.document.id for hit in hits) == ["22222222-2222-4222-8222-222222222222",
                                                           "33333333-3333-4333-8333-333333333333"]
    finally:
        db.dispose()


def test_managers_started_together_on_an_empty_database_all_start(empty_url: str) -> None:
    """Four migrations at once on one new database (managers started together): one migrates, the
    others wait for it and find the schema current; none fails on a table the other created."""
    import threading

    databases = [connect(empty_url) for _ in range(4)]
    failures: list[BaseException] = []
    start = threading.Barrier(len(databases))

    def run(db: object) -> None:
        try:
            start.wait()
            migrate(db)  # type: ignore[arg-type]
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)

    threads = [threading.Thread(target=run, args=(db,)) for db in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        with databases[0].write_engine.begin() as conn:
            assert schema_differences(conn) == []
    finally:
        for db in databases:
            db.dispose()


def test_0005_leaves_no_function_or_trigger_on_writes_and_goes_back_to_0004(empty_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from manager_service.storage.db import MIGRATIONS

    db = connect(empty_url)
    try:
        migrate(db)
        if db.dialect != "postgresql":
            return  # (SQLite never had them)
        objects = ("SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'quaero_jobs_changed'), "
                   "(SELECT count(*) FROM pg_proc WHERE proname IN ('quaero_json_merge_patch', 'quaero_notify_job_changes'))")
        with db.read_engine.connect() as conn:
            assert tuple(conn.exec_driver_sql(objects).one()) == (0, 0)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.write_engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        with db.read_engine.connect() as conn:
            assert tuple(conn.exec_driver_sql(objects).one()) == (1, 2)
        migrate(db)
        with db.read_engine.connect() as conn:
            assert tuple(conn.exec_driver_sql(objects).one()) == (0, 0)
    finally:
        db.dispose()


def test_0006_puts_sqlite_objects_written_escaped_in_the_form_merges_match(tmp_path: object) -> None:
    from manager_service.storage import Stores
    from manager_service.storage.clock import ManualClock
    from manager_service.storage.secretbox import SecretBox

    db = connect(f"sqlite:///{tmp_path}/old.db")
    try:
        migrate(db, "0005")
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        job_id = "11111111-1111-4111-8111-111111111111"
        with db.write_engine.begin() as conn:  # as CreateJob wrote it before: non-ASCII as \u escapes
            conn.execute(sa.text(
                "INSERT INTO jobs (id, type, name, status, config, metadata, result, version, metadata_version, "
                "created_at, updated_at) VALUES (:id, 'crawl', 'old', 'pending', '{\"n\\u00e4me\": 1}', "
                "'{\"caf\\u00e9\": {\"x\": 1}, \"plain\": \"a\\nb\"}', '{}', 1, 1, :t, :t)"), {"id": job_id, "t": stamp})
        migrate(db)
        with db.read_engine.connect() as conn:
            config, metadata = conn.execute(sa.text("SELECT config, metadata FROM jobs")).one()
        assert config == '{"näme":1}' and metadata == '{"café":{"x":1},"plain":"a\\nb"}'
        stores = Stores.open(db, SecretBox(bytes(32)), ManualClock())
        # the merge now finds the key the job was created with: replaced inside, then deleted
        assert stores.jobs.update_json(job_id, "metadata", {"café": {"x": 2}}, False, "").metadata == {
            "café": {"x": 2}, "plain": "a\nb"}
        assert stores.jobs.update_json(job_id, "metadata", {"café": None}, False, "").metadata == {"plain": "a\nb"}
    finally:
        db.dispose()
