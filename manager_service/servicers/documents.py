"""quaero.manager.v1.Documents."""
from __future__ import annotations

import grpc

from quaero.api.manager.v1 import documents_pb2, documents_pb2_grpc
from quaero.convert import DOCUMENT_KIND_NAMES, DOCUMENT_KINDS, message_size, to_timestamp

from ..storage.documents import DocumentStore
from ..storage.records import Document


def document_to_proto(document: Document) -> documents_pb2.Document:
    message = documents_pb2.Document(
        id=document.id, url=document.url, final_url=document.final_url, title=document.title, text=document.text,
        content_hash=document.content_hash, status_code=document.status_code, job_id=document.job_id,
        parent_job_id=document.parent_job_id, content_type=document.content_type,
        text_truncated=document.text_truncated, etag=document.etag,
        kind=DOCUMENT_KINDS.get(document.kind, documents_pb2.DOCUMENT_KIND_UNSPECIFIED),
        last_modified=document.last_modified, definition_id=document.definition_id, auth_id=document.auth_id,
        links=document.links)
    to_timestamp(document.fetched_at, message.fetch_time)
    return message


def kinds_from_proto(kinds: list[int]) -> list[str]:
    # (An unknown number is passed on as itself: the store refuses it with INVALID_ARGUMENT.)
    return [DOCUMENT_KIND_NAMES.get(kind, str(kind)) for kind in kinds if kind != documents_pb2.DOCUMENT_KIND_UNSPECIFIED]


class DocumentsServicer(documents_pb2_grpc.DocumentsServicer):
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def GetDocument(self, request: documents_pb2.GetDocumentRequest,
                    context: grpc.ServicerContext) -> documents_pb2.Document:
        return document_to_proto(self.store.get(request.document_id, request.url, request.parent_job_id,
                                                request.include_links, request.omit_text))

    def ListDocuments(self, request: documents_pb2.ListDocumentsRequest,
                      context: grpc.ServicerContext) -> documents_pb2.ListDocumentsResponse:
        documents, token = self.store.list_page(request.parent_job_id, request.page_size, request.page_token,
                                                request.omit_text, kinds_from_proto(list(request.kinds))
                                                ).cut(document_to_proto, message_size)
        return documents_pb2.ListDocumentsResponse(documents=documents, next_page_token=token)

    def SearchDocuments(self, request: documents_pb2.SearchDocumentsRequest,
                        context: grpc.ServicerContext) -> documents_pb2.SearchDocumentsResponse:
        hits, token = self.store.index.search(request.query, request.definition_id, request.parent_job_id,
                                              not request.all_versions, request.page_size, request.page_token)
        response = documents_pb2.SearchDocumentsResponse(next_page_token=token)
        for hit in hits:
            response.hits.add(document=document_to_proto(hit.document), snippet=hit.snippet, score=hit.score,
                              highlights=[documents_pb2.TextRange(start=start, end=end)
                                          for start, end in hit.highlights])
        return response
