"""The search index over contents (SQLite FTS5, PostgreSQL tsvector + GIN), written in the transaction that
stores a content, and SearchDocuments' query. Words and the query syntax: search_text."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.errors import InvalidArgument, Reason
from quaero.ids import check_job_id

from . import search_text
from .db import Database
from .models import documents
from .paging import PageTokens
from .records import Document

MAX_HITS_PER_PAGE = 100
MAX_OFFSET = 10_000  # deeper than anyone reads; a deeper page is refused rather than ranked at length
# FTS5 'merge' after a prune: up to 2,000 pages of segments (negative: even when few segments wait).
FTS_MERGE_PAGES = -2000
# Title words weigh more than text words: FTS5's bm25 column weights; PostgreSQL's ts_rank weights
# {D, C, B, A} with the title as A and the text as D.
TITLE_WEIGHT = 4.0
PG_WEIGHTS = "'{0.25, 0.25, 0.25, 1.0}'"

HIT_COLUMNS = ("d.id, d.url, d.final_url, d.content_hash, d.content_type, d.status_code, d.job_id, "
               "d.parent_job_id, d.fetched_at, d.kind, d.etag, d.last_modified, d.definition_id, d.auth_id, "
               "c.title, c.text, c.text_truncated")


@dataclass(frozen=True)
class Hit:
    document: Document
    snippet: str
    highlights: list[tuple[int, int]]
    score: float


class SearchIndex:
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens
        self.postgres = db.dialect == "postgresql"

    def add(self, conn: Connection, content_id: int, title: str, text: str) -> None:
        title_words, text_words = search_text.indexed(title, text)
        if self.postgres:
            conn.exec_driver_sql(
                "UPDATE contents SET search = setweight(to_tsvector('simple', %(t)s), 'A') || "
                "setweight(to_tsvector('simple', %(b)s), 'D') WHERE id = %(id)s",
                {"t": title_words, "b": text_words, "id": content_id})
        else:
            conn.exec_driver_sql("INSERT INTO contents_fts (rowid, title, body) VALUES (?, ?, ?)",
                                 (content_id, title_words, text_words))

    def remove(self, conn: Connection, rows: Sequence[tuple[int, str, str]]) -> None:
        """Before contents (id, title, text) are deleted. PostgreSQL's index goes with the row; FTS5's
        contentless table is told the words it indexed (computed again: the same function of the same text)."""
        if self.postgres or not rows:
            return
        conn.exec_driver_sql(
            "INSERT INTO contents_fts (contents_fts, rowid, title, body) VALUES ('delete', ?, ?, ?)",
            [(content_id, *search_text.indexed(title, text)) for content_id, title, text in rows])

    def compact(self) -> None:
        """After deletes: FTS5 keeps a deleted content's entries as tombstones until its segments are merged;
        a bounded merge here (then the freed pages go back: Database.reclaim) keeps the index from growing
        with every prune. PostgreSQL's GIN entries go with their rows (and a vacuum)."""
        if self.postgres:
            return
        with self.db.write_engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO contents_fts (contents_fts, rank) VALUES ('merge', {FTS_MERGE_PAGES})")

    def search(self, query_text: str, definition_id: str, parent_job_id: str, latest_only: bool, page_size: int,
               page_token: str) -> tuple[list[Hit], str]:
        query = search_text.parse(query_text)
        if parent_job_id:
            parent_job_id = check_job_id(parent_job_id, "parent_job_id")
        if page_size < 0:
            raise InvalidArgument(Reason.INVALID_PAGE_SIZE, "page_size cannot be negative", "page_size")
        size = min(page_size or 20, MAX_HITS_PER_PAGE)
        scope = f"SearchDocuments|{query_text}|{definition_id}|{parent_job_id}|{latest_only}"
        offset = 0
        if page_token:
            position = self.tokens.read(page_token, scope)
            if position is None:
                raise InvalidArgument(Reason.INVALID_PAGE_TOKEN, "page_token is not from a previous response to "
                                      "this query and these filters", "page_token")
            offset = int(position[0])
        if offset >= MAX_OFFSET:
            return [], ""
        where = ["1 = 1"]
        params: dict[str, Any] = {"limit": size + 1, "offset": offset}
        if definition_id:
            where.append("d.definition_id = :definition_id")
            params["definition_id"] = definition_id
        if parent_job_id:
            where.append("d.parent_job_id = :parent_job_id")
            params["parent_job_id"] = parent_job_id
        if latest_only:
            where.append("d.latest")
        # Ranked first by the same measure on both databases (each word or phrase the query asks for counts 2
        # found in the title and 1 found in the text), then by the database's own relevance (FTS5's bm25,
        # PostgreSQL's ts_rank by length), then newest first and by id.
        matched = []
        for index, phrase in enumerate(search_text.phrases(query)):
            if self.postgres:
                params[f"t{index}"] = search_text.tsquery_in_weight(phrase, "A")
                params[f"b{index}"] = search_text.tsquery_in_weight(phrase, "D")
                matched.append(f"2 * (c.search @@ to_tsquery('simple', :t{index}))::int + "
                            f"(c.search @@ to_tsquery('simple', :b{index}))::int")
            else:
                params[f"t{index}"] = search_text.fts5_in_column(phrase, "title")
                params[f"b{index}"] = search_text.fts5_in_column(phrase, "body")
                matched.append(f"2 * (f.rowid IN (SELECT rowid FROM contents_fts WHERE contents_fts MATCH :t{index})) + "
                            f"(f.rowid IN (SELECT rowid FROM contents_fts WHERE contents_fts MATCH :b{index}))")
        found = " + ".join(matched)
        if self.postgres:
            params["q"] = search_text.tsquery(query)
            sql = (f"SELECT {HIT_COLUMNS}, {found} AS found, ts_rank({PG_WEIGHTS}, c.search, q, 1) AS score "
                   "FROM to_tsquery('simple', :q) AS q, contents AS c JOIN documents AS d ON d.content_id = c.id "
                   f"WHERE c.search @@ q AND {' AND '.join(where)} "
                   "ORDER BY found DESC, score DESC, d.fetched_at DESC, d.id LIMIT :limit OFFSET :offset")
        else:
            params["q"] = search_text.fts5(query)
            sql = (f"SELECT {HIT_COLUMNS}, {found} AS found, -f.score AS score FROM (SELECT rowid, "
                   f"bm25(contents_fts, {TITLE_WEIGHT}, 1.0) AS score FROM contents_fts WHERE contents_fts MATCH :q) AS f "
                   "JOIN contents AS c ON c.id = f.rowid JOIN documents AS d ON d.content_id = c.id "
                   f"WHERE {' AND '.join(where)} ORDER BY found DESC, score DESC, d.fetched_at DESC, d.id "
                   "LIMIT :limit OFFSET :offset")
        with self.db.read_engine.connect() as conn:
            typed = sa.text(sql).columns(fetched_at=documents.c.fetched_at.type, text_truncated=sa.Boolean(),
                                         score=sa.Float())
            rows = conn.execute(typed, params).mappings().all()
        hits = [self._hit(row, query) for row in rows[:size]]
        token = self.tokens.make(scope, [offset + size]) if len(rows) > size else ""
        return hits, token

    @staticmethod
    def _hit(row: Any, query: search_text.Query) -> Hit:
        snippet, marks = search_text.snippet(row["title"], row["text"], query)
        document = Document.from_row({**row, "text": ""})
        return Hit(document, snippet, marks, float(row["found"]) + min(max(float(row["score"]), 0.0), 0.999))
