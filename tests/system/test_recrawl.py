"""Incremental recrawls: a run sends the validators of each URL's latest stored version (same definition,
same credentials), a 304 or an identical body makes the page unchanged (its document refers to the stored
content: no copy), links of unchanged pages are still followed, and each run counts its pages new / changed
/ unchanged / gone. On SQLite and PostgreSQL, against a signed-in site on an IP literal."""
from __future__ import annotations

from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from quaero.api.manager.v1 import documents_pb2, jobs_pb2
from quaero.testing.harness import CrawlHarness
from tests.support.sites import signed_in_to_wiki

KIND = documents_pb2.DocumentKind


def run(harness: CrawlHarness, definition_id: str) -> Any:
    return harness.outcome(harness.start(definition_id).parent_job_id)


def counts(job: jobs_pb2.Job) -> tuple[int, int, int, int]:
    return job.documents.new, job.documents.changed, job.documents.unchanged, job.documents.gone


def urls_of(harness: CrawlHarness, run_id: str, *kinds: int) -> list[str]:
    listed = harness.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=run_id, kinds=list(kinds), page_size=1000, omit_text=True)).documents
    return sorted(document.url for document in listed)


def new_contents(harness: CrawlHarness, run_id: str, *earlier: str) -> int:
    """Contents this run's documents refer to that no earlier run's do: what it stored anew."""
    db = harness.manager.server.stores.db
    with db.read_engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(DISTINCT content_id) FROM documents WHERE parent_job_id = :run AND content_id NOT IN "
            "(SELECT content_id FROM documents WHERE parent_job_id IN :earlier)").bindparams(
                sa.bindparam("earlier", expanding=True)), {"run": run_id, "earlier": list(earlier)}).scalar())


def test_recrawls_count_new_changed_unchanged_and_gone_and_store_no_copies(db_harness: CrawlHarness,
                                                                           wiki: Any) -> None:
    site = wiki(7)  # /w/0 links /w/1 and /w/2, /w/1 links /w/3 and /w/4, /w/2 links /w/5 and /w/6
    auth_id = signed_in_to_wiki(db_harness, site, "wiki-etag")
    definition = db_harness.definition([site.url(0)], auth_id, max_depth=5)

    first = run(db_harness, definition)
    assert first.parent.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert counts(first.parent) == (7, 0, 0, 0)
    assert site.conditional == 0 and site.body_bytes > 0

    # Nothing changed: every page answers 304, refers to the stored content, and its links are followed.
    site.reset_counters()
    second = run(db_harness, definition)
    assert counts(second.parent) == (0, 0, 7, 0)
    assert site.not_modified == 7 and site.body_bytes == 0
    assert len(second.documents) == 7
    assert {d.kind for d in second.documents} == {KIND.DOCUMENT_KIND_UNCHANGED}
    assert new_contents(db_harness, second.parent.id, first.parent.id) == 0
    by_url = {d.url: d for d in first.documents}
    for document in second.documents:
        assert document.content_hash == by_url[document.url].content_hash
        assert document.status_code == 304 and document.content_type.startswith("text/html")
    # Its documents read as the content they refer to.
    again = db_harness.client.documents.GetDocument(documents_pb2.GetDocumentRequest(
        url=site.url(4), parent_job_id=second.parent.id))
    assert again.title == "Wiki 4" and "wiki page 4 version 0" in again.text

    # Page 3 changes and gains a link to a new page 7; page 6 goes (so page 2, which linked it, changes).
    site.change(3)
    site.add(7)
    site.remove(6)
    site.reset_counters()
    third = run(db_harness, definition)
    assert counts(third.parent) == (1, 2, 4, 1)
    stats = db_harness.client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=third.parent.id))
    assert counts(stats) == (1, 2, 4, 1)  # type: ignore[arg-type]
    assert site.not_modified == 4
    run_id = third.parent.id
    assert urls_of(db_harness, run_id, KIND.DOCUMENT_KIND_NEW) == [site.url(7)]
    assert urls_of(db_harness, run_id, KIND.DOCUMENT_KIND_CHANGED) == sorted([site.url(2), site.url(3)])
    assert urls_of(db_harness, run_id, KIND.DOCUMENT_KIND_UNCHANGED) == sorted(site.url(n) for n in (0, 1, 4, 5))
    assert urls_of(db_harness, run_id, KIND.DOCUMENT_KIND_GONE) == [site.url(6)]
    assert urls_of(db_harness, run_id, KIND.DOCUMENT_KIND_NEW, KIND.DOCUMENT_KIND_CHANGED) == sorted(
        [site.url(2), site.url(3), site.url(7)])
    assert new_contents(db_harness, run_id, first.parent.id, second.parent.id) == 3
    changed = db_harness.client.documents.GetDocument(documents_pb2.GetDocumentRequest(url=site.url(3),
                                                                                       parent_job_id=run_id))
    assert "version 1" in changed.text and changed.kind == KIND.DOCUMENT_KIND_CHANGED


@pytest.mark.parametrize("validators", ["last_modified", "none"])
def test_an_identical_body_or_a_last_modified_304_is_unchanged(harness: CrawlHarness, wiki: Any,
                                                               validators: str) -> None:
    site = wiki(5, validators)
    definition = harness.definition([site.url(0)], signed_in_to_wiki(harness, site, f"wiki-{validators}"), max_depth=5)
    first = run(harness, definition)
    site.reset_counters()
    second = run(harness, definition)
    assert counts(second.parent) == (0, 0, 5, 0)
    assert new_contents(harness, second.parent.id, first.parent.id) == 0
    if validators == "none":
        assert site.conditional == 0 and site.body_bytes > 0  # the body came, and its hash matched
    else:
        assert site.not_modified == 5 and site.body_bytes == 0


def test_validators_are_never_sent_with_other_credentials(harness: CrawlHarness, wiki: Any) -> None:
    """A 304 says a page is what it was for the session that fetched it: a run signed in as someone else
    fetches every page whole."""
    site = wiki(3)
    first_auth = signed_in_to_wiki(harness, site, "wiki-alice")
    definition = harness.definition([site.url(0)], first_auth, max_depth=5)
    run(harness, definition)
    from quaero.api.manager.v1 import definitions_pb2
    stored = harness.client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition))
    stored.auth_id = signed_in_to_wiki(harness, site, "wiki-bob")
    harness.client.definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(job_definition=stored))
    site.reset_counters()
    second = run(harness, definition)
    assert site.conditional == 0 and site.not_modified == 0
    assert counts(second.parent) == (0, 0, 3, 0)  # (the same bodies all the same: no copies)
    assert {d.auth_id for d in second.documents} == {"wiki-bob"}


@pytest.mark.parametrize("run_id, kinds, words", [
    ("", [KIND.DOCUMENT_KIND_NEW], "parent_job_id"),
    ("00000000-0000-4000-8000-000000000000", [KIND.DOCUMENT_KIND_GONE, KIND.DOCUMENT_KIND_NEW], "on their own"),
    ("00000000-0000-4000-8000-000000000000", [9], "unknown document kind"),
])
def test_gone_is_listed_on_its_own_and_kinds_need_a_run(harness: CrawlHarness, run_id: str, kinds: list[int],
                                                         words: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        harness.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(parent_job_id=run_id,
                                                                                  kinds=kinds))  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details()
