"""The search index over contents (SQLite FTS5, PostgreSQL tsvector + GIN), written in the transaction that
stores a content, and SearchDocuments' query. Words and the query syntax: search_text."""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.errors import InvalidArgument, Reason
from quaero.ids import check_job_id

from . import driver, search_text
from .clock import aware
from .db import Database
from .models import contents, documents
from .paging import PageTokens
from .records import Document

MAX_HITS_PER_PAGE = 100
# A query's hits are ranked among its newest CANDIDATES matches (README, "Search"): finding and ranking
# every match of a word most documents hold took 0.3 s (SQLite) to 2.4 s (PostgreSQL) at 100,000.
CANDIDATES = 1000
# FTS5 'merge' after a prune: up to 2,000 pages of segments (negative: even when few segments wait).
FTS_MERGE_PAGES = -2000
# Title words weigh more than text words: FTS5's bm25 column weights; PostgreSQL's ts_rank weights
# {D, C, B, A} with the title as A and the text as D.
TITLE_WEIGHT = 4.0
PG_WEIGHTS = "'{0.25, 0.25, 0.25, 1.0}'"

INSERT_CONTENT = sa.insert(contents).returning(contents.c.id)
CONTENT_COLUMNS = tuple(column.name for column in contents.c if column.name != "id")  # (what content_values gives)
# PostgreSQL: the content and its tsvector in one statement (an UPDATE after the INSERT cost a round trip
# per page and wrote every content's row twice).
PG_INSERT_CONTENT = (
    f"INSERT INTO contents ({', '.join(CONTENT_COLUMNS)}, search) VALUES "
    f"({', '.join(f'%({name})s' for name in CONTENT_COLUMNS)}, setweight(to_tsvector('simple', %(title_words)s), 'A') "
    "|| setweight(to_tsvector('simple', %(text_words)s), 'D')) RETURNING id")

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

    def store(self, conn: Connection, values: dict[str, Any]) -> int:
        """A new content (`values`: its CONTENT_COLUMNS) with its search entry, in the caller's transaction;
        its id."""
        title_words, text_words = search_text.indexed(values["title"], values["text"])
        if self.postgres:
            return int(conn.exec_driver_sql(PG_INSERT_CONTENT, {
                **values, "title_words": title_words, "text_words": text_words}).scalar_one())
        content_id = int(conn.execute(INSERT_CONTENT, values).scalar_one())
        conn.exec_driver_sql("INSERT INTO contents_fts (rowid, title, body) VALUES (?, ?, ?)",
                             (content_id, title_words, text_words))
        return content_id

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
        if offset >= CANDIDATES:
            return [], ""
        with self.db.read_engine.connect() as conn:
            candidates = self._candidates(conn, query, definition_id, parent_job_id, latest_only)
            # Ranked first by a measure computed here, the same on both databases (how many of the query's
            # words and phrases the title holds), then by the database's own relevance (FTS5's bm25,
            # PostgreSQL's ts_rank by length), then newest first and by id.
            ranked = sorted(candidates, key=lambda c: (-c.in_title, -c.score, -c.fetched_at.timestamp(),
                                                       c.document_id))
            page = ranked[offset:offset + size]
            rows = {row["id"]: row for row in conn.execute(
                sa.text(f"SELECT {HIT_COLUMNS} FROM documents AS d JOIN contents AS c ON c.id = d.content_id "
                        "WHERE d.id IN :ids").bindparams(sa.bindparam("ids", expanding=True)).columns(
                    fetched_at=documents.c.fetched_at.type, text_truncated=sa.Boolean()),
                {"ids": [c.document_id for c in page]}).mappings()} if page else {}
        hits = []
        for candidate in page:
            row = rows.get(candidate.document_id)
            if row is not None:  # (deleted since the first read)
                hits.append(self._hit(row, query, candidate.in_title + min(max(candidate.score, 0.0), 0.999)))
        token = self.tokens.make(scope, [offset + size]) if len(ranked) > offset + size else ""
        return hits, token

    def _candidates(self, conn: Connection, query: search_text.Query, definition_id: str, parent_job_id: str,
                    latest_only: bool) -> list[Candidate]:
        """The CANDIDATES newest matching documents (by content: newer contents have larger ids), with the
        database's relevance. Both databases read the index in that order and stop there, so a word that
        half the corpus holds costs no more than a rare one."""
        where = []
        params: dict[str, Any] = {"cap": CANDIDATES}
        for name, value, condition in (("definition_id", definition_id, "d.definition_id = {}"),
                                       ("parent_job_id", parent_job_id, "d.parent_job_id = {}")):
            if value:
                where.append(condition.format(driver.named_placeholder(name, self.postgres)))
                params[name] = value
        if latest_only:
            where.append("d.latest")
        scope = "".join(f" AND {condition}" for condition in where)
        mark = functools.partial(driver.named_placeholder, postgres=self.postgres)
        # Ordered by content id alone, so both databases can stop at the cap (a second key made SQLite sort
        # every match). On PostgreSQL the statement is never prepared: a generic plan cannot know whether a
        # query's words are rare (read the GIN index) or common (walk the contents newest first), and
        # picked the first for every query.
        if self.postgres:
            params["q"] = search_text.tsquery(query)
            sql = ("SELECT c.id, d.id, d.fetched_at, ts_rank(" + PG_WEIGHTS + f", c.search, q, 1), c.title FROM to_tsquery("
                   f"'simple', {mark('q')}) AS q, contents AS c JOIN documents AS d ON d.content_id = c.id "
                   f"WHERE c.search @@ q{scope} ORDER BY c.id DESC LIMIT {mark('cap')}")
        else:
            params["q"] = search_text.fts5(query)
            sql = (f"SELECT f.rowid, d.id, d.fetched_at, -bm25(contents_fts, {TITLE_WEIGHT}, 1.0), c.title "
                   "FROM contents_fts AS f JOIN documents AS d ON d.content_id = f.rowid JOIN contents AS c ON "
                   f"c.id = f.rowid WHERE contents_fts MATCH {mark('q')}{scope} "
                   f"ORDER BY f.rowid DESC LIMIT {mark('cap')}")
        cursor = driver.cursor(conn)
        try:
            if self.postgres:
                cursor.execute(sql, params, prepare=False)
            else:
                cursor.execute(sql, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        phrases = query.phrases
        return [Candidate(content_id, document_id, _moment(fetched_at), float(score or 0),
                          search_text.phrases_in(phrases, title))
                for content_id, document_id, fetched_at, score, title in rows]

    @staticmethod
    def _hit(row: Any, query: search_text.Query, score: float) -> Hit:
        snippet, marks = search_text.snippet(row["title"], row["text"], query)
        return Hit(Document.from_row({**row, "text": ""}), snippet, marks, score)


@dataclass(frozen=True)
class Candidate:
    content_id: int
    document_id: str
    fetched_at: datetime
    score: float  # the database's relevance
    in_title: int  # how many of the query's words and phrases the title holds


def _moment(value: Any) -> datetime:
    """A timestamp as the driver returns it (SQLite: SQLAlchemy's naive UTC text)."""
    return aware(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))
