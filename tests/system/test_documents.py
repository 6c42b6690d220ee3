"""Documents belong to the run that fetched them: a second run over the same site keeps the first run's
documents where they were, and "the latest version of a URL" is a lookup across runs."""
from __future__ import annotations

import grpc

from quaero.api.manager.v1 import documents_pb2
from quaero.testing.harness import CrawlHarness, cookie
from quaero.testing.site import html
from tests.support.grpc_errors import expect_error

APP = "app.site.test"


def listed(harness: CrawlHarness, parent_id: str) -> dict[str, documents_pb2.Document]:
    reply = harness.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(parent_job_id=parent_id,
                                                                                      page_size=100))
    return {document.url: document for document in reply.documents}


def test_a_second_run_keeps_the_first_runs_documents_and_url_lookups_find_the_latest(harness: CrawlHarness) -> None:
    pages = {(APP, f"/p{n}"): html(f"first p{n}") for n in range(10)}
    site = harness.site({(APP, "/"): html("first index", *[f"/p{n}" for n in range(10)]), **pages})
    auth = harness.credentials([cookie("sid", "docs", APP)])
    definition = harness.definition([f"http://{APP}:{site.port}/"], auth)
    first = harness.outcome(harness.start(definition).parent_job_id)
    assert len(first.documents) == 11
    before = listed(harness, first.parent.id)

    site.handler.routes.update({key: html(f"second {key[1]}") for key in pages})  # type: ignore[attr-defined]
    second = harness.outcome(harness.start(definition).parent_job_id)
    assert len(second.documents) == 11

    after = listed(harness, first.parent.id)
    assert after.keys() == before.keys() and all(after[url].text == before[url].text for url in before)
    assert {d.id for d in after.values()}.isdisjoint({d.id for d in second.documents})
    url = f"http://{APP}:{site.port}/p3"
    assert "first p3" in after[url].text and "second /p3" in listed(harness, second.parent.id)[url].text

    documents = harness.client.documents
    latest = documents.GetDocument(documents_pb2.GetDocumentRequest(url=url))
    assert latest.parent_job_id == second.parent.id and "second" in latest.text
    older = documents.GetDocument(documents_pb2.GetDocumentRequest(url=url, parent_job_id=first.parent.id))
    assert older.parent_job_id == first.parent.id and "first p3" in older.text
    assert documents.GetDocument(documents_pb2.GetDocumentRequest(document_id=older.id)).text == older.text
    expect_error(lambda: documents.GetDocument(documents_pb2.GetDocumentRequest(
        url=url + "/nowhere", parent_job_id=first.parent.id)), grpc.StatusCode.NOT_FOUND, "DOCUMENT_NOT_FOUND", "url")
