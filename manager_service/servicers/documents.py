"""quaero.manager.v1.Documents."""
from __future__ import annotations

from typing import Any

import grpc

from quaero.api.manager.v1 import documents_pb2, documents_pb2_grpc

from ..convert import to_timestamp
from ..documents_store import DocumentStore
from ..grpc_common import maps_domain_errors


def document_to_proto(row: Any) -> documents_pb2.Document:
    document = documents_pb2.Document(
        id=row["id"], url=row["url"], final_url=row["final_url"], title=row["title"], text=row.get("text") or "",
        content_hash=row["content_hash"], status_code=row["status_code"], job_id=row["job_id"],
        parent_job_id=row["parent_job_id"], content_type=row["content_type"],
        text_truncated=bool(row["text_truncated"]))
    to_timestamp(row["fetched_at"], document.fetch_time)
    return document


class DocumentsServicer(documents_pb2_grpc.DocumentsServicer):
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    @maps_domain_errors
    def GetDocument(self, request: documents_pb2.GetDocumentRequest,
                    context: grpc.ServicerContext) -> documents_pb2.Document:
        return document_to_proto(self.store.get(request.document_id, request.url))

    @maps_domain_errors
    def ListDocuments(self, request: documents_pb2.ListDocumentsRequest,
                      context: grpc.ServicerContext) -> documents_pb2.ListDocumentsResponse:
        rows, token = self.store.list_page(request.parent_job_id, request.page_size, request.page_token, request.omit_text)
        return documents_pb2.ListDocumentsResponse(documents=[document_to_proto(r) for r in rows],
                                                   next_page_token=token)
