"""Crawled documents: what a page's record may hold (written by LeaseQueue.complete in the same
transaction as the child's end), and reads."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.errors import InvalidArgument, NotFound, Reason
from quaero.ids import check_document_id, check_job_id
from quaero.limits import MAX_CONTENT_TYPE_CHARS, MAX_TEXT_BYTES, MAX_TITLE_CHARS, truncate_utf8, without_nul

from . import driver
from .db import Database
from .models import documents
from .paging import Listing, PageTokens, keyset_page, page_request, stamp
from .records import Document, DocumentInput


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def document_values(document: DocumentInput, job_id: str, parent_job_id: str, stamp: datetime) -> dict[str, Any]:
    """The row for a document, within the limits of quaero.limits (text cut and flagged, NULs removed)."""
    text, cut = truncate_utf8(without_nul(document.text), MAX_TEXT_BYTES)
    url = without_nul(document.url)
    return {
        "id": str(uuid.uuid4()), "url": url, "url_hash": url_hash(url), "final_url": without_nul(document.final_url),
        "title": without_nul(document.title)[:MAX_TITLE_CHARS], "text": text,
        "text_truncated": cut or document.text_truncated, "content_hash": without_nul(document.content_hash)[:64],
        "content_type": without_nul(document.content_type)[:MAX_CONTENT_TYPE_CHARS],
        "status_code": document.status_code, "job_id": job_id, "parent_job_id": parent_job_id, "fetched_at": stamp,
    }


UPSERT_COLUMNS = tuple(column.name for column in documents.c)


class DocumentStore:
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens
        self._upsert = self._upsert_statement(db.dialect)

    @staticmethod
    def _upsert_statement(dialect: str) -> str:
        """INSERT ... ON CONFLICT (parent_job_id, url_hash) DO UPDATE: one statement, built once, run at
        the driver level (a page's record writes one; SQLAlchemy's per-execution work cost more than the
        database's). A run's page fetched again (a retried child) replaces that run's document; other
        runs keep theirs."""
        mark = driver.placeholder(dialect == "postgresql")
        names = ", ".join(f'"{name}"' for name in UPSERT_COLUMNS)
        updates = ", ".join(f'"{name}" = excluded."{name}"' for name in UPSERT_COLUMNS
                            if name not in ("id", "url", "url_hash", "parent_job_id"))
        return (f"INSERT INTO documents ({names}) VALUES ({', '.join([mark] * len(UPSERT_COLUMNS))}) "
                f"ON CONFLICT (parent_job_id, url_hash) DO UPDATE SET {updates}")

    def upsert(self, conn: Connection, document: DocumentInput, job_id: str, parent_job_id: str,
               stamp: datetime) -> None:
        values = document_values(document, job_id, parent_job_id, stamp)
        values["fetched_at"] = driver.timestamp(stamp, self.db.dialect == "postgresql")
        cursor = driver.cursor(conn)
        try:
            cursor.execute(self._upsert, [values[name] for name in UPSERT_COLUMNS])
        finally:
            cursor.close()

    def get(self, document_id: str, url: str, parent_job_id: str = "") -> Document:
        """By id; by URL in one run (parent_job_id); or by URL alone: its latest version across runs."""
        if not document_id and not url:
            raise InvalidArgument(Reason.MISSING_DOCUMENT_KEY, "give document_id, or url (and parent_job_id for one "
                                  "run's version)", "document_id")
        query = sa.select(documents)
        if document_id:
            query = query.where(documents.c.id == check_document_id(document_id))
        else:
            query = query.where(documents.c.url_hash == url_hash(url))
            if parent_job_id:
                query = query.where(documents.c.parent_job_id == check_job_id(parent_job_id, "parent_job_id"))
            query = query.order_by(documents.c.fetched_at.desc(), documents.c.id.desc()).limit(1)
        with self.db.read_engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            if document_id:
                raise NotFound(Reason.DOCUMENT_NOT_FOUND, f"no document has id {document_id!r}", "document_id")
            where = f" in run {parent_job_id}" if parent_job_id else ""
            raise NotFound(Reason.DOCUMENT_NOT_FOUND, f"no document has url {url[:200]!r}{where}", "url")
        return Document.from_row(row)

    def list_page(self, parent_job_id: str, page_size: int, page_token: str, omit_text: bool) -> Listing[Document]:
        """Newest first, by (fetched_at, id); omit_text may change from page to page."""
        parent_job_id = check_job_id(parent_job_id, "parent_job_id") if parent_job_id else ""
        scope = f"ListDocuments|{parent_job_id}"
        page = page_request(self.tokens, page_size, page_token, scope)
        columns = [c for c in documents.c if not (omit_text and c.name == "text")]
        query = sa.select(*columns)
        if parent_job_id:
            query = query.where(documents.c.parent_job_id == parent_job_id)
        query = keyset_page(query, documents.c.fetched_at, documents.c.id, page)
        with self.db.read_engine.connect() as conn:
            rows = [Document.from_row(row) for row in conn.execute(query).mappings()]
        return Listing(rows, page.size, lambda doc: self.tokens.make(scope, [stamp(doc.fetched_at), doc.id]))
