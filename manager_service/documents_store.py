"""Crawled documents (written by JobStore.complete_leased, read here)."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from .db import Database
from .errors import InvalidArgument, NotFound
from .jobs_store import _offset, _page_size
from .models import documents


class DocumentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, document_id: str, url: str) -> RowMapping:
        if not document_id and not url:
            raise InvalidArgument("MISSING_DOCUMENT_KEY", "give document_id or url", "document_id")
        condition = documents.c.id == document_id if document_id else documents.c.url == url
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(documents).where(condition)).mappings().first()
        if row is None:
            raise NotFound("DOCUMENT_NOT_FOUND", f"no document has {'id' if document_id else 'url'} "
                           f"{document_id or url!r}", "document_id" if document_id else "url")
        return row

    def list_page(self, parent_job_id: str, page_size: int, page_token: str, omit_text: bool) -> tuple[list[RowMapping], str]:
        size = _page_size(page_size, 50)
        offset = _offset(page_token)
        columns = [c for c in documents.c if not (omit_text and c.name == "text")]
        query = sa.select(*columns)
        if parent_job_id:
            query = query.where(documents.c.parent_job_id == parent_job_id)
        query = query.order_by(documents.c.fetched_at.desc(), documents.c.id).offset(offset).limit(size + 1)
        with self.db.read_engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        return rows[:size], (str(offset + size) if len(rows) > size else "")
