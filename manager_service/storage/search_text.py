"""One search syntax on both databases: what gets indexed (the words of a document, found here, not by
either database's parser), and a query parsed here and written out as an FTS5 MATCH expression or a
PostgreSQL tsquery.

Words are runs of letters and digits, lower-cased ("e-mail" is the two words "e mail", as a phrase in a
query). Both databases are handed the words already split and joined by spaces, so SQLite's unicode61
tokenizer and PostgreSQL's 'simple' configuration see the same words, and a query matches the same
documents on both.

Query syntax (README, "Recurring crawls"):
    alpha beta        both words (AND)
    "alpha beta"      the phrase
    -alpha            not containing alpha (needs at least one word that is not excluded)
    alpha OR beta     either (OR binds tighter than the AND between terms: a b OR c = a AND (b OR c))
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from quaero.errors import InvalidArgument, Reason

WORD = re.compile(r"[^\W_]+")
MAX_WORD_CHARS = 64  # longer runs (hashes, base64) are not words anyone searches for; PostgreSQL skips > 2 KB
# A document's title and the first this many words of its text are indexed (PostgreSQL keeps word
# positions up to 16,383, so phrases further in could not match the same on both databases).
MAX_INDEXED_WORDS = 16000
MAX_QUERY_CHARS = 500
MAX_QUERY_TERMS = 32


SCANNED_CHARS_PER_WORD = 40  # a text is read this far per indexed word at most (words are ~6 letters apart)


# A word of at most MAX_WORD_CHARS letters and digits, not part of a longer run (matched in C: the words of
# every content are found again when it is removed from SQLite's index).
INDEXED_WORD = re.compile(rf"(?<![^\W_])[^\W_]{{1,{MAX_WORD_CHARS}}}(?![^\W_])")


def words(text: str, limit: int = MAX_INDEXED_WORDS) -> list[str]:
    """The first `limit` words of the lower-cased text (the same function indexes a content and, on SQLite,
    removes it: it must not change without reindexing)."""
    return INDEXED_WORD.findall(text[:limit * SCANNED_CHARS_PER_WORD].lower())[:limit]


def indexed(title: str, text: str) -> tuple[str, str]:
    """What the index holds for a document: its title's words and its text's, each joined by spaces."""
    return " ".join(words(title, 1000)), " ".join(words(text))


@dataclass(frozen=True)
class Term:
    """One word or phrase (several words in a row), or several such alternatives joined by OR."""
    alternatives: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Query:
    required: tuple[Term, ...]
    excluded: tuple[tuple[str, ...], ...]

    @property
    def phrases(self) -> list[tuple[str, ...]]:
        """Every word or phrase the query looks for (each alternative of each term)."""
        return [phrase for term in self.required for phrase in term.alternatives]

    @property
    def words(self) -> list[str]:
        """Every word the query looks for (for highlighting snippets)."""
        return [word for phrase in self.phrases for word in phrase]


TOKEN = re.compile(r'\s*(-?)("([^"]*)"?|[^\s"]+)')


def parse(text: str) -> Query:
    """The query, or InvalidArgument saying what is wrong with it."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(Reason.INVALID_QUERY, f"the query is {len(text)} characters; the limit is "
                              f"{MAX_QUERY_CHARS}", "query")
    pieces: list[tuple[bool, str, tuple[str, ...]]] = []  # (excluded, raw, words)
    for match in TOKEN.finditer(text.strip()):
        negated, raw, quoted = match.group(1) == "-", match.group(2), match.group(3)
        phrase = tuple(words(quoted if quoted is not None else raw, 100))
        if quoted is None and raw == "OR" and not negated:
            pieces.append((False, "OR", ()))
        elif phrase:
            pieces.append((negated, raw, phrase))
    required: list[list[tuple[str, ...]]] = []
    excluded: list[tuple[str, ...]] = []
    join_next = False
    for negated, raw, phrase in pieces:
        if raw == "OR" and not phrase:
            if not required or join_next:
                raise InvalidArgument(Reason.INVALID_QUERY, "OR must stand between two words or phrases, as in "
                                      "`alpha OR beta`", "query")
            join_next = True
        elif negated:
            if join_next:
                raise InvalidArgument(Reason.INVALID_QUERY, "an excluded word cannot be one side of OR", "query")
            excluded.append(phrase)
        elif join_next:
            required[-1].append(phrase)
            join_next = False
        else:
            required.append([phrase])
    if join_next:
        raise InvalidArgument(Reason.INVALID_QUERY, "OR must stand between two words or phrases, as in "
                              "`alpha OR beta`", "query")
    if not required:
        raise InvalidArgument(Reason.INVALID_QUERY, "the query has no word to look for (words are letters and "
                              "digits; a query of excluded words alone matches nothing)", "query")
    if len(required) + len(excluded) > MAX_QUERY_TERMS:
        raise InvalidArgument(Reason.INVALID_QUERY, f"the query has more than {MAX_QUERY_TERMS} terms", "query")
    return Query(tuple(Term(tuple(alternatives)) for alternatives in required), tuple(excluded))


def fts5(query: Query) -> str:
    """The query as an FTS5 MATCH expression (every word quoted: no word is read as an operator)."""
    def phrase(words: tuple[str, ...]) -> str:
        return '"' + " ".join(words) + '"'

    positive = " AND ".join("(" + " OR ".join(phrase(p) for p in term.alternatives) + ")" for term in query.required)
    return positive + "".join(f" NOT {phrase(p)}" for p in query.excluded)


def tsquery(query: Query) -> str:
    """The query as PostgreSQL tsquery text (for to_tsquery('simple', ...)); words are letters and digits
    only, so quoting each one is enough."""
    def phrase(words: tuple[str, ...]) -> str:
        return "(" + " <-> ".join(f"'{word}'" for word in words) + ")"

    positive = " & ".join("(" + " | ".join(phrase(p) for p in term.alternatives) + ")" for term in query.required)
    return positive + "".join(f" & !{phrase(p)}" for p in query.excluded)


def phrases_in(phrases: list[tuple[str, ...]], title: str) -> int:
    """How many of the query's words and phrases the title holds (the first ranking measure)."""
    found = words(title, 1000)
    text = " " + " ".join(found) + " "
    return sum(1 for phrase in phrases if " " + " ".join(phrase) + " " in text)


SNIPPET_WORDS = 24


def snippet(title: str, text: str, query: Query) -> tuple[str, list[tuple[int, int]]]:
    """A short passage of the text around the query's words, and where they are in it ((start, end)
    character offsets): made here, so both databases show the same one."""
    wanted = set(query.words)
    source = text[:200_000] or title
    spans = [(m.start(), m.end(), m.group().lower() in wanted) for m in WORD.finditer(source)]
    if not spans:
        return "", []
    # The window of SNIPPET_WORDS words holding the most distinct query words, earliest on a tie.
    best, best_score = 0, -1
    hits = [index for index, span in enumerate(spans) if span[2]]
    for first in hits or [0]:
        start = max(0, first - 3)
        window = spans[start:start + SNIPPET_WORDS]
        score = len({source[s:e].lower() for s, e, hit in window if hit})
        if score > best_score:
            best, best_score = start, score
    window = spans[best:best + SNIPPET_WORDS]
    begin, end = window[0][0], window[-1][1]
    passage = " ".join(source[begin:end].split())
    prefix = "…" if begin > 0 else ""
    suffix = "…" if WORD.search(source, end) else ""
    out = prefix + passage + suffix
    marks = [(m.start(), m.end()) for m in WORD.finditer(out) if m.group().lower() in wanted]
    return out, marks
