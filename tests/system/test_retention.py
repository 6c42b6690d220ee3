"""Retention: DeleteJob removes a run with its children, logs, session and the contents no other run refers
to (the URL's version before becomes its latest again); the background prune keeps each definition's newest
runs and never a run still going or the newest completed one; the database file (SQLite) or relations
(PostgreSQL) stop growing over prune cycles. On SQLite and PostgreSQL."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from quaero.api.manager.v1 import definitions_pb2, documents_pb2, jobs_pb2
from quaero.convert import dict_to_struct
from quaero.testing.harness import CrawlHarness
from quaero.testing.wiki_site import WikiSite
from tests.support.sites import signed_in_to_wiki


def definition_of(harness: CrawlHarness, site: WikiSite, auth_id: str, **options: Any) -> str:
    signed_in_to_wiki(harness, site, auth_id)
    return harness.definition([site.url(0)], auth_id, max_depth=20, **options)


def run(harness: CrawlHarness, definition_id: str) -> str:
    return harness.outcome(harness.start(definition_id).parent_job_id).parent.id


def scalar(harness: CrawlHarness, sql: str, **params: Any) -> int:
    with harness.manager.server.stores.db.read_engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar() or 0)


def leftovers(harness: CrawlHarness, run_id: str) -> dict[str, int]:
    """Rows of a run that should be gone with it, and contents no document refers to (anywhere)."""
    return {
        "jobs": scalar(harness, "SELECT count(*) FROM jobs WHERE id = :r OR parent_id = :r", r=run_id),
        "logs": scalar(harness, "SELECT count(*) FROM job_logs WHERE job_id = :r OR job_id IN "
                                "(SELECT id FROM jobs WHERE parent_id = :r)", r=run_id),
        "documents": scalar(harness, "SELECT count(*) FROM documents WHERE parent_job_id = :r", r=run_id),
        "sessions": scalar(harness, "SELECT count(*) FROM run_sessions WHERE parent_job_id = :r", r=run_id),
        "orphan contents": scalar(harness, "SELECT count(*) FROM contents c WHERE NOT EXISTS "
                                           "(SELECT 1 FROM documents d WHERE d.content_id = c.id)"),
    }


def search_runs(harness: CrawlHarness, definition_id: str, query: str) -> set[str]:
    hits = harness.client.documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(
        query=query, definition_id=definition_id, page_size=100)).hits
    return {hit.document.parent_job_id for hit in hits}


def test_delete_job_removes_a_run_and_what_only_it_refers_to(db_harness: CrawlHarness, wiki: Any) -> None:
    site = wiki(7)
    definition = definition_of(db_harness, site, "keep-delete")
    first = run(db_harness, definition)
    site.change(5)
    second = run(db_harness, definition)
    assert search_runs(db_harness, definition, "wiki page") == {second}

    # The newest run goes: its one new content (page 5's new version) with it; the six it shared stay,
    # and the first run's versions are the latest again.
    deleted = db_harness.client.jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=second))
    assert (deleted.jobs_deleted, deleted.documents_deleted, deleted.contents_deleted) == (8, 7, 1)
    assert leftovers(db_harness, second) == {"jobs": 0, "logs": 0, "documents": 0, "sessions": 0,
                                             "orphan contents": 0}
    assert search_runs(db_harness, definition, "wiki page") == {first}
    with pytest.raises(grpc.RpcError) as gone:
        db_harness.client.get_job(second)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    deleted = db_harness.client.jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=first))
    assert (deleted.documents_deleted, deleted.contents_deleted) == (7, 7)
    assert leftovers(db_harness, first)["documents"] == 0
    assert search_runs(db_harness, definition, "wiki page") == set()


def test_delete_job_refuses_a_run_still_going_unless_asked_to_cancel_it(db_harness: CrawlHarness) -> None:
    jobs = db_harness.client.jobs
    request = jobs_pb2.CreateJobRequest(type="crawl", name="going")
    dict_to_struct({"job_definition_id": "by-hand"}, request.config)
    going = jobs.CreateJob(request)
    child = jobs.CreateJob(jobs_pb2.CreateJobRequest(parent_id=going.id, type="crawl_page"))
    for target, code, words in ((going.id, grpc.StatusCode.FAILED_PRECONDITION, "cancel"),
                                (child.id, grpc.StatusCode.INVALID_ARGUMENT, "whole runs"),
                                ("00000000-0000-4000-8000-000000000000", grpc.StatusCode.NOT_FOUND, "")):
        with pytest.raises(grpc.RpcError) as refused:
            jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=target))
        assert refused.value.code() == code and words in refused.value.details()
    assert db_harness.client.get_job(going.id).status == jobs_pb2.JOB_STATUS_PENDING  # untouched
    deleted = jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=going.id, cancel=True))
    assert deleted.jobs_deleted == 2


def test_the_prune_keeps_the_newest_runs_a_running_one_and_the_newest_completed(db_harness: CrawlHarness,
                                                                                wiki: Any) -> None:
    site = wiki(3)
    definition = definition_of(db_harness, site, "keep-prune", keep_runs=2)
    runs = [run(db_harness, definition) for _ in range(4)]
    server = db_harness.manager.server
    server.prune()
    kept = existing(db_harness, set(runs))
    assert kept == set(runs[2:])
    assert all(leftovers(db_harness, run_id)["jobs"] == 0 for run_id in runs[:2])

    # keep_runs = 1, with a run still going after the newest completed one: both stay.
    stored = db_harness.client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition))
    stored.keep_runs = 1
    db_harness.client.definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=stored))
    request = jobs_pb2.CreateJobRequest(type="crawl", name="going")
    dict_to_struct({"job_definition_id": definition}, request.config)
    going = db_harness.client.jobs.CreateJob(request).id
    server.prune()
    kept = existing(db_harness, {*runs, going})
    assert kept == {runs[3], going}


def existing(harness: CrawlHarness, job_ids: set[str]) -> set[str]:
    found = set()
    for job_id in job_ids:
        try:
            found.add(harness.client.get_job(job_id).id)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
    return found


def storage_size(harness: CrawlHarness) -> int:
    db = harness.manager.server.stores.db
    if db.dialect == "sqlite":
        # The file itself, once the WAL is copied back into it (the WAL is reused, not grown, but its length
        # depends on when the last checkpoint ran).
        with db.write_engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(str(db.write_engine.url.database))
    return scalar(harness, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname IN "
                           "('jobs', 'documents', 'contents', 'job_logs')")


@pytest.fixture
def own_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A manager on a database of its own (a fresh SQLite file, or a fresh PostgreSQL database): sizes
    measured on the session's shared PostgreSQL database move with other tests' rows."""
    import secrets

    import psycopg

    from quaero.testing.harness import start_manager
    from tests.support.hosts import RESOLVE
    url, drop = f"sqlite:///{tmp_path / 'own.db'}", None
    if request.param == "postgres":
        admin = request.getfixturevalue("admin_url")
        name = "quaero_own_" + secrets.token_hex(4)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    manager = start_manager(tmp_path / "own", url)
    harness = CrawlHarness(manager, resolve=RESOLVE)
    try:
        yield harness
    finally:
        harness.close()
        manager.close()
        if drop is not None:
            drop()


@pytest.mark.parametrize("own_harness", ["sqlite", "postgres"], indirect=True)
def test_space_a_prune_frees_is_reused_and_the_database_stops_growing(own_harness: CrawlHarness,
                                                                     wiki: Any) -> None:
    """Each cycle stores a whole new version of a 40-page site (every page changed, ~20 KB of varied text
    each) and prunes to the newest run: the storage settles, and then does not grow."""
    db_harness = own_harness
    site = wiki(40, padding=20_000, varied=True)
    definition = definition_of(db_harness, site, "keep-size", keep_runs=1)
    sizes = []
    for _cycle in range(12):
        site.change(*range(40))
        run(db_harness, definition)
        db_harness.manager.server.prune()
        sizes.append(storage_size(db_harness))
    # Each cycle writes about 800 KB of text that does not compress (words of a bounded vocabulary, as a
    # language's: a GIN index keeps every word it ever indexed, and random strings would grow it for ever).
    # The storage settles within a few cycles (FTS5's segments reach their levels; index pages split once)
    # and then stays: the last six cycles add nothing. (FTS5 keeps a deleted content's entries until its
    # segments merge: without the merge after each prune, SQLite's file grew by 4% a cycle, for ever.)
    # Measured over 22 cycles: flat from the sixth.
    written = 40 * 20_000
    assert max(sizes) - sizes[1] < 2 * written, str(sizes)
    assert sizes[-1] <= max(sizes[3:7]) + 64 * 1024, str(sizes)


def test_two_managers_deleting_one_run_at_once_leave_nothing_behind(db_harness: CrawlHarness, wiki: Any) -> None:
    """The same run deleted by two managers at once (a DeleteJob racing the other manager's prune): each
    batch is its own transaction and finds what is left, so both end and no row or content is left over."""
    import threading

    from manager_service.storage import Stores
    from manager_service.storage.db import connect
    from manager_service.storage.secretbox import SecretBox
    from quaero.errors import JobNotFound

    site = wiki(30)
    definition = definition_of(db_harness, site, "keep-race")
    run_id = run(db_harness, definition)
    mine = db_harness.manager.server.stores
    other_db = connect(mine.db.write_engine.url.render_as_string(hide_password=False))
    other = Stores.open(other_db, SecretBox(b"k" * 32))
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def delete(stores: Stores) -> None:
        start.wait()
        try:
            stores.retention.delete_run(run_id, cancel=False)
        except JobNotFound:
            pass  # (the other one finished first)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=delete, args=(stores,)) for stores in (mine, other)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        other_db.dispose()
    assert errors == []
    assert leftovers(db_harness, run_id) == {"jobs": 0, "logs": 0, "documents": 0, "sessions": 0,
                                             "orphan contents": 0}
