"""Crawled documents: what a page's record stores (written by LeaseQueue.complete in the same transaction
as the child's end), compared with the latest stored version of its URL in the same definition, and
reads. A document's text lives in `contents`, stored once however many runs' documents refer to it."""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.errors import InvalidArgument, NotFound, Reason
from quaero.ids import check_document_id, check_job_id
from quaero.limits import MAX_CONTENT_TYPE_CHARS, MAX_TEXT_BYTES, MAX_TITLE_CHARS, truncate_utf8, without_nul

from . import driver
from .db import Database
from .models import contents, documents, jobs
from .paging import Listing, PageTokens, keyset_page, page_request, stamp
from .records import CHANGED, GONE, KINDS, NEW, UNCHANGED, Document, DocumentInput, PreviousVersion
from .search import SearchIndex

MAX_VALIDATOR_CHARS = 512
MAX_LINKS = 5000

def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def document_values(document: DocumentInput, job_id: str, parent_job_id: str, stamp: datetime) -> dict[str, Any]:
    """The document's own row (its text is its content's: content_values), within quaero.limits."""
    url = without_nul(document.url)
    return {
        "id": str(uuid.uuid4()), "url": url, "url_hash": url_hash(url), "final_url": without_nul(document.final_url),
        "content_hash": without_nul(document.content_hash)[:64],
        "content_type": without_nul(document.content_type)[:MAX_CONTENT_TYPE_CHARS],
        "status_code": document.status_code, "job_id": job_id, "parent_job_id": parent_job_id, "fetched_at": stamp,
        "auth_id": without_nul(document.auth_id)[:64], "etag": without_nul(document.etag)[:MAX_VALIDATOR_CHARS],
        "last_modified": without_nul(document.last_modified)[:64],
    }


def content_values(document: DocumentInput, stamp: datetime) -> dict[str, Any]:
    """A new content: title and text within their limits (text cut and flagged, NULs removed)."""
    text, cut = truncate_utf8(without_nul(document.text), MAX_TEXT_BYTES)
    title = without_nul(document.title)[:MAX_TITLE_CHARS]
    links = [without_nul(link) for link in list(document.links)[:MAX_LINKS]]
    return {"content_hash": without_nul(document.content_hash)[:64], "title": title, "text": text,
            "text_truncated": cut or document.text_truncated, "links": json.dumps(links) if links else "",
            "stored_bytes": len(title.encode("utf-8", "surrogatepass")) + len(text.encode("utf-8", "surrogatepass")),
            "created_at": stamp}


@dataclass
class LatestVersions:
    """The latest stored versions a batch of records read at its start, by (definition id, URL hash) (None:
    no version), and the keys this batch has written since (read again when asked)."""
    rows: dict[tuple[str, str], Any] = field(default_factory=dict)
    written: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class Basis:
    """What a page's document is written against: the content it refers to (None: a new one), its kind,
    and the latest stored version it replaces as latest (None: none)."""
    content_id: int | None
    content_hash: str
    kind: str
    replaces: str | None
    content_type: str = ""  # a 304's: the version's it refers to (a 304 need not say)


UPSERT_COLUMNS = ("id", "url", "url_hash", "final_url", "content_id", "content_hash", "content_type", "status_code",
                  "job_id", "parent_job_id", "definition_id", "auth_id", "kind", "etag", "last_modified", "latest",
                  "fetched_at")
LATEST = sa.text("latest")  # (written out: the partial index ix_documents_lineage is on exactly this)
# A page's record reads and writes these: built once (building a statement per page cost more than running
# it: a sixth of the manager's time per crawled page).
_BASIS_COLUMNS = (documents.c.id, documents.c.content_id, documents.c.content_hash, documents.c.parent_job_id,
                  documents.c.content_type, documents.c.url_hash)
LATEST_OF_URL = (sa.select(*_BASIS_COLUMNS)
                 .where(documents.c.definition_id == sa.bindparam("d"), documents.c.url_hash == sa.bindparam("h"), LATEST)
                 .limit(1))
LATEST_OF_URLS = (sa.select(*_BASIS_COLUMNS)
                  .where(documents.c.definition_id == sa.bindparam("d"),
                         documents.c.url_hash.in_(sa.bindparam("hashes", expanding=True)), LATEST))
NO_LONGER_LATEST = sa.update(documents).where(documents.c.id == sa.bindparam("r")).values(latest=False)
LATEST_VERSIONS = (  # (a lease's pages: their URLs' latest stored versions)
    sa.select(documents.c.id, documents.c.url_hash, documents.c.final_url, documents.c.etag, documents.c.last_modified,
              documents.c.content_hash, documents.c.auth_id, contents.c.links)
    .select_from(documents.join(contents, contents.c.id == documents.c.content_id))
    .where(documents.c.definition_id == sa.bindparam("d"),
           documents.c.url_hash.in_(sa.bindparam("hashes", expanding=True)), LATEST))
DOCUMENT_COLUMNS = [c for c in documents.c if c.name not in ("content_id", "latest")]


class DocumentStore:
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens
        self.index = SearchIndex(db, tokens)
        self._upsert = self._upsert_statement(db.dialect)

    @staticmethod
    def _upsert_statement(dialect: str) -> str:
        """INSERT ... ON CONFLICT (parent_job_id, url_hash) DO UPDATE: one statement, built once, run at
        the driver level. A run's page recorded again replaces that run's document; other runs keep theirs."""
        mark = driver.placeholder(dialect == "postgresql")
        names = ", ".join(f'"{name}"' for name in UPSERT_COLUMNS)
        updates = ", ".join(f'"{name}" = excluded."{name}"' for name in UPSERT_COLUMNS
                            if name not in ("id", "url", "url_hash", "parent_job_id"))
        return (f"INSERT INTO documents ({names}) VALUES ({', '.join([mark] * len(UPSERT_COLUMNS))}) "
                f"ON CONFLICT (parent_job_id, url_hash) DO UPDATE SET {updates}")

    # ---- writes (inside a completion's transaction) ---------------------------------------------
    def latest_of(self, conn: Connection, urls: Iterable[tuple[str, str]]) -> LatestVersions:
        """The latest stored version of each (definition id, URL), read together for a batch of records (one
        statement per definition instead of one per page: a round trip each on PostgreSQL)."""
        wanted: dict[str, set[str]] = {}
        for definition_id, url in urls:
            if definition_id:
                wanted.setdefault(definition_id, set()).add(url_hash(without_nul(url)))
        known = LatestVersions()
        for definition_id, hashes in wanted.items():
            rows = {row.url_hash: row for row in conn.execute(LATEST_OF_URLS, {"d": definition_id,
                                                                                "hashes": sorted(hashes)})}
            for hashed in hashes:
                known.rows[(definition_id, hashed)] = rows.get(hashed)
        return known

    def basis(self, conn: Connection, document: DocumentInput, parent_job_id: str, definition_id: str,
              known: LatestVersions | None = None) -> Basis:
        """Reads only: what the page's document will refer to. A 304 (not_modified) must name a stored
        version of the same URL and definition (InvalidArgument otherwise, before anything is written).
        `known`: the latest versions read for the batch (latest_of), where still current."""
        hashed = url_hash(without_nul(document.url))
        latest: Any = None
        if definition_id:
            key = (definition_id, hashed)
            if known is not None and key in known.rows and key not in known.written:
                latest = known.rows[key]
            else:
                latest = conn.execute(LATEST_OF_URL, {"d": definition_id, "h": hashed}).first()
            if latest is not None and latest.parent_job_id == parent_job_id:
                latest = None  # (this run's own document, recorded again: it is replaced, not compared with)
        replaces = latest.id if latest is not None else None
        if document.not_modified:
            base: Any = latest if latest is not None and latest.id == document.previous_document_id else None
            if base is None and document.previous_document_id:
                base = conn.execute(
                    sa.select(documents.c.id, documents.c.content_id, documents.c.content_hash,
                              documents.c.content_type)
                    .where(documents.c.id == document.previous_document_id, documents.c.url_hash == hashed,
                           documents.c.definition_id == definition_id)).first()
            if base is None or not definition_id:
                raise InvalidArgument(Reason.INVALID_PREVIOUS_DOCUMENT, "document.not_modified needs "
                                      "previous_document_id to name a stored version of the same URL in the run's "
                                      "job definition (it may have been deleted since the lease)",
                                      "document.previous_document_id")
            return Basis(base.content_id, base.content_hash, UNCHANGED, replaces, base.content_type)
        if latest is not None and document.content_hash and latest.content_hash == document.content_hash:
            return Basis(latest.content_id, latest.content_hash, UNCHANGED, replaces)
        return Basis(None, document.content_hash, CHANGED if latest is not None else NEW, replaces)

    def write(self, conn: Connection, document: DocumentInput, basis: Basis, job_id: str, parent_job_id: str,
              definition_id: str, stamp: datetime, known: LatestVersions | None = None) -> None:
        """The document (and its content and search entry when new), as the latest version of its URL
        (which `known` no longer holds: a later page of the batch with the same URL reads it again)."""
        if known is not None:  # (None: a document written alone, as the search and prune benchmarks do)
            known.written.add((definition_id, url_hash(without_nul(document.url))))
        content_id = basis.content_id
        if content_id is None:
            content_id = self.index.store(conn, content_values(document, stamp))
        if basis.replaces is not None:
            conn.execute(NO_LONGER_LATEST, {"r": basis.replaces})
        values = document_values(document, job_id, parent_job_id, stamp)
        values.update(content_id=content_id, content_hash=basis.content_hash[:64], definition_id=definition_id,
                      kind=basis.kind, latest=True, content_type=values["content_type"] or basis.content_type,
                      fetched_at=driver.timestamp(stamp, self.db.dialect == "postgresql"))
        cursor = driver.cursor(conn)
        try:
            cursor.execute(self._upsert, [values[name] for name in UPSERT_COLUMNS])
        finally:
            cursor.close()

    def previous_versions(self, conn: Connection, definition_id: str, urls: Sequence[str]) -> dict[str, PreviousVersion]:
        """The latest stored version of each URL in the definition, by URL."""
        by_hash = {url_hash(url): url for url in urls}
        if not definition_id or not by_hash:
            return {}
        rows = conn.execute(LATEST_VERSIONS, {"d": definition_id, "hashes": list(by_hash)})
        return {by_hash[row.url_hash]: PreviousVersion(row.id, row.final_url, row.etag, row.last_modified,
                                                       row.content_hash, row.auth_id,
                                                       tuple(json.loads(row.links)) if row.links else ())
                for row in rows}

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, document_id: str, url: str, parent_job_id: str = "", include_links: bool = False,
            omit_text: bool = False) -> Document:
        """By id; by URL in one run (parent_job_id); or by URL alone: its latest version across runs."""
        if not document_id and not url:
            raise InvalidArgument(Reason.MISSING_DOCUMENT_KEY, "give document_id, or url (and parent_job_id for one "
                                  "run's version)", "document_id")
        query = self._select(omit_text, include_links)
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
        document = Document.from_row(row)
        if include_links and row["links"]:
            document = replace(document, links=tuple(json.loads(row["links"])))
        return document

    @staticmethod
    def _select(omit_text: bool, include_links: bool = False) -> Any:
        columns = [*DOCUMENT_COLUMNS, contents.c.title, contents.c.text_truncated]
        if not omit_text:
            columns.append(contents.c.text)
        if include_links:
            columns.append(contents.c.links)
        return sa.select(*columns).select_from(documents.join(contents, contents.c.id == documents.c.content_id))

    def list_page(self, parent_job_id: str, page_size: int, page_token: str, omit_text: bool,
                  kinds: Sequence[str] = ()) -> Listing[Document]:
        """Newest first, by (fetched_at, id); omit_text may change from page to page. kinds: only those;
        GONE (on its own, with a run): the documents of the run before that this run has no document for."""
        parent_job_id = check_job_id(parent_job_id, "parent_job_id") if parent_job_id else ""
        wanted = sorted(set(kinds))
        for kind in wanted:
            if kind not in KINDS:
                raise InvalidArgument(Reason.INVALID_DOCUMENT_KIND, f"unknown document kind {kind!r}", "kinds")
        if wanted and not parent_job_id:
            raise InvalidArgument(Reason.INVALID_DOCUMENT_KIND, "kinds filters one run's documents: give "
                                  "parent_job_id too", "kinds")
        if GONE in wanted and len(wanted) > 1:
            raise InvalidArgument(Reason.INVALID_DOCUMENT_KIND, "gone documents are the run before's: list them on "
                                  "their own (kinds = [GONE])", "kinds")
        scope = f"ListDocuments|{parent_job_id}|{','.join(wanted)}"
        page = page_request(self.tokens, page_size, page_token, scope)
        query = self._select(omit_text)
        if wanted == [GONE]:
            query = self._gone(query, parent_job_id)
        elif parent_job_id:
            query = query.where(documents.c.parent_job_id == parent_job_id)
            if wanted:
                query = query.where(documents.c.kind.in_(wanted))
        query = keyset_page(query, documents.c.fetched_at, documents.c.id, page)
        gone = wanted == [GONE]
        with self.db.read_engine.connect() as conn:
            rows = [Document.from_row(row, GONE if gone else "") for row in conn.execute(query).mappings()]
        return Listing(rows, page.size, lambda doc: self.tokens.make(scope, [stamp(doc.fetched_at), doc.id]))

    @staticmethod
    def _gone(query: Any, run_id: str) -> Any:
        previous = sa.select(jobs.c.previous_run_id).where(jobs.c.id == run_id).scalar_subquery()
        return query.where(gone_from(run_id, previous))


def gone_from(run_id: str, previous_run: Any) -> Any:
    """Documents of the run before (an id, or an expression for one) that this run has none for, by URL."""
    ours = documents.alias("ours")
    return sa.and_(documents.c.parent_job_id == previous_run, ~sa.exists().where(
        ours.c.parent_job_id == run_id, ours.c.url_hash == documents.c.url_hash))


def count_gone(conn: Connection, run_id: str, previous_run_id: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(documents)
                            .where(gone_from(run_id, previous_run_id))).scalar_one())
