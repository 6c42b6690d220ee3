"""Documents: full-text search (the manager's SearchDocuments) and one document, rendered."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from quaero.api.manager.v1 import documents_pb2

from ..views import page
from .common import clients, param


async def documents_search(request: Request) -> Response:
    query, definition, run = param(request, "q", 500), param(request, "definition"), param(request, "run")
    hits: list[documents_pb2.SearchHit] = []
    next_page = ""
    if query:
        answer = await clients(request).documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(
            query=query, definition_id=definition, parent_job_id=run, page_size=20,
            page_token=param(request, "page", 2000)))
        hits, next_page = list(answer.hits), answer.next_page_token
    return page(request, "documents.html", q=query, definition=definition, run=run, hits=hits, next_page=next_page)


async def document_page(request: Request) -> Response:
    document = await clients(request).documents.GetDocument(documents_pb2.GetDocumentRequest(
        document_id=request.path_params["document_id"], include_links=True))
    return page(request, "document.html", document=document)
