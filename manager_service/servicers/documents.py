"""quaero.manager.v1.Documents."""
from __future__ import annotations

import grpc

from quaero.api.manager.v1 import documents_pb2, documents_pb2_grpc
from quaero.convert import message_size, to_timestamp

from ..storage.documents import DocumentStore
from ..storage.records import Document


def document_to_proto(document: Document) -> documents_pb2.Document:
    message = documents_pb2.Document(
        id=document.id, url=document.url, final_url=document.final_url, title=document.title, text=document.text,
        content_hash=document.content_hash, status_code=document.status_code, job_id=document.job_id,
        parent_job_id=document.parent_job_id, content_type=document.content_type,
        text_truncated=document.text_truncated)
    to_timestamp(document.fetched_at, message.fetch_time)
    return message


class DocumentsServicer(documents_pb2_grpc.DocumentsServicer):
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def GetDocument(self, request: documents_pb2.GetDocumentRequest,
                    context: grpc.ServicerContext) -> documents_pb2.Document:
        return document_to_proto(self.store.get(request.document_id, request.url, request.parent_job_id))

    def ListDocuments(self, request: documents_pb2.ListDocumentsRequest,
                      context: grpc.ServicerContext) -> documents_pb2.ListDocumentsResponse:
        documents, token = self.store.list_page(request.parent_job_id, request.page_size, request.page_token,
                                                request.omit_text).cut(document_to_proto, message_size)
        return documents_pb2.ListDocumentsResponse(documents=documents, next_page_token=token)
