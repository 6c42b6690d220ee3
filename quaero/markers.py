"""logged_out_markers: what marks a page that is a login form served in place (status 200, no redirect),
as many sites answer an expired session. Each marker is `text:<RE2 pattern>` on the page's text or
`css:<selector>` on its HTML (e.g. `css:form#login`, `css:input[type=password]`). No default: a
marker that is too broad would fail real pages."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cssselect import SelectorError
from lxml import etree, html
from lxml.cssselect import CSSSelector

from .patterns import any_search, compile_pattern

MAX_MARKERS = 20
MAX_MARKER_CHARS = 1000
KINDS = ("text:", "css:")


@dataclass(frozen=True)
class Markers:
    texts: tuple[tuple[str, Any], ...] = ()  # (the marker as written, compiled RE2)
    selectors: tuple[tuple[str, CSSSelector], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.texts or self.selectors)

    def match(self, text: str, markup: str | None) -> str:
        """The first marker the page matches ('' for none): text markers on its text, CSS markers on its
        HTML (parsed only when there are any)."""
        for written, pattern in self.texts:
            if any_search([pattern], text):
                return written
        if self.selectors and markup:
            try:
                tree = html.document_fromstring(markup)
            except (etree.ParserError, ValueError):
                return ""
            for written, selector in self.selectors:
                if selector(tree):
                    return written
        return ""


def check_marker(marker: str) -> None:
    """ValueError saying what is wrong with one marker."""
    compile_markers((marker,))


@lru_cache(maxsize=256)
def compile_markers(markers: tuple[str, ...]) -> Markers:
    texts, selectors = [], []
    for marker in markers:
        if len(marker) > MAX_MARKER_CHARS:
            raise ValueError(f"longer than {MAX_MARKER_CHARS} characters")
        kind, _, body = marker.partition(":")
        if not body.strip() or f"{kind}:" not in KINDS:
            raise ValueError("must be text:<RE2 pattern> (on the page's text) or css:<selector> (on its HTML), "
                             "e.g. 'css:form#login'")
        if kind == "text":
            texts.append((marker, compile_pattern(body)))
        else:
            try:
                selectors.append((marker, CSSSelector(body.strip())))
            except SelectorError as error:
                raise ValueError(f"not a CSS selector cssselect understands ({error})") from None
    return Markers(tuple(texts), tuple(selectors))
