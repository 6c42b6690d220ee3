"""What a crawl reads from a page and which links it may follow. Knows nothing of gRPC or HTTP.

Pages are parsed by libxml2 (lxml) as a stream of events into bounded collections: no tree is built,
so memory does not grow with the number of elements (5 MiB of `<b>` held 366 MiB as a tree, 65 MiB as
a stream), and parsing is linear in C (0.5 s for 5 MiB of tag soup, where html.parser took 4 s).
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import lxml.etree

from quaero.cookies import registrable_domain
from quaero.limits import MAX_TEXT_BYTES, MAX_TITLE_CHARS
from quaero.patterns import any_search, compile_all
from quaero.urls import is_logout_link, normalise_url

SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
MAX_HREFS = 20_000  # links read from one page; more are counted, not kept
MAX_LINKS_PER_PAGE = 5000  # children one page may create
MAX_LINK_BYTES = 1024 * 1024  # ... and their URLs together


@dataclass
class ParsedPage:
    title: str = ""
    text: str = ""
    links: list[str] = field(default_factory=list)
    text_truncated: bool = False
    links_dropped: int = 0


class _Collector:
    """lxml parser target: the title, the visible text (within MAX_TEXT_BYTES) and a/area hrefs."""

    def __init__(self) -> None:
        self.title: list[str] = []
        self.parts: list[str] = []
        self.links: list[str] = []
        self.links_dropped = 0
        self.text_size = 0
        self.truncated = False
        self._run: list[str] = []
        self._skip = 0
        self._in_title = False

    def _flush(self) -> None:
        if not self._run:
            return
        text = "".join(self._run).strip()
        self._run = []
        if not text or self.truncated:
            return
        size = len(text.encode("utf-8", "replace"))
        if self.text_size + size > MAX_TEXT_BYTES:
            self.truncated = True
            room = MAX_TEXT_BYTES - self.text_size
            text = text.encode("utf-8", "replace")[:max(room, 0)].decode("utf-8", "ignore")
            if not text:
                return
        self.parts.append(text)
        self.text_size += size + 1

    def start(self, tag: Any, attrib: Any) -> None:
        self._flush()
        if not isinstance(tag, str):
            return
        tag = tag.lower()
        if tag in SKIPPED_TAGS:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("a", "area"):
            href = attrib.get("href")
            if href:
                if len(self.links) < MAX_HREFS:
                    self.links.append(href)
                else:
                    self.links_dropped += 1

    def end(self, tag: Any) -> None:
        self._flush()
        if not isinstance(tag, str):
            return
        tag = tag.lower()
        if tag in SKIPPED_TAGS and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def data(self, data: str) -> None:
        if self._in_title:
            if sum(map(len, self.title)) < MAX_TITLE_CHARS:
                self.title.append(data)
        elif not self._skip and not self.truncated:
            self._run.append(data)

    def close(self) -> _Collector:
        self._flush()
        return self


class _Target:
    """The parser's target for the page being parsed: lxml inspects a target's methods when a parser is
    made (inspect.getfullargspec, ~4% of the executor's CPU when a parser was made per page), so each
    thread keeps one parser whose target hands the events to that page's collector."""

    def __init__(self) -> None:
        self.collector = _Collector()

    def start(self, tag: Any, attrib: Any) -> None:
        self.collector.start(tag, attrib)

    def end(self, tag: Any) -> None:
        self.collector.end(tag)

    def data(self, data: str) -> None:
        self.collector.data(data)

    def close(self) -> _Collector:
        return self.collector.close()


# A parser kept after a page this big would hold libxml2's state for it (13 MiB for 5 MiB of nested
# tags): such a page gets a parser of its own, freed at once.
REUSED_PARSER_MAX_CHARS = 256 * 1024
_parsers = threading.local()


def parse_html(html: str) -> ParsedPage:
    reuse = len(html) <= REUSED_PARSER_MAX_CHARS
    kept: tuple[Any, _Target] | None = getattr(_parsers, "kept", None) if reuse else None
    if kept is None:
        target = _Target()
        kept = (lxml.etree.HTMLParser(target=target, recover=True, no_network=True), target)
    parser, target = kept
    collector = target.collector = _Collector()
    try:
        parser.feed(html)
        parser.close()
    except (lxml.etree.LxmlError, ValueError, UnicodeError):
        collector.close()  # keep what was read before the parser gave up
        reuse = False  # (a parser that gave up midway is not trusted with the next page)
    target.collector = _Collector()
    if reuse:
        _parsers.kept = kept
    else:
        _parsers.kept = None
        # The parser and its target form a reference cycle that holds libxml2's parser state until the
        # cyclic GC gets to it, which under load is many pages later (measured: +12 MiB per such page,
        # 378 MiB for 16). Collecting the young generations now frees it at once (~10 us).
        del parser, kept
        gc.collect(1)
    title = " ".join("".join(collector.title).split())[:MAX_TITLE_CHARS]
    return ParsedPage(title=title, text="\n".join(collector.parts), links=collector.links,
                      text_truncated=collector.truncated, links_dropped=collector.links_dropped)


def site_of(host: str) -> str:
    """The registrable domain (eTLD+1) of a host, or the host itself (IP addresses, localhost)."""
    return registrable_domain(host)


@dataclass
class LinkScope:
    """Which discovered links become children. Patterns are RE2 (linear time whatever the input)."""
    start_urls: list[str]
    same_site_only: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sites = {site_of(urlsplit(url).hostname or "") for url in self.start_urls}
        self._include = compile_all(tuple(self.include))
        self._exclude = compile_all(tuple(self.exclude))

    def allows(self, url: str) -> bool:
        if is_logout_link(url):
            return False
        if self.same_site_only and site_of(urlsplit(url).hostname or "") not in self._sites:
            return False
        if self._include and not any_search(self._include, url):
            return False
        return not any_search(self._exclude, url)

    def follow(self, links: Iterable[str], base: str) -> tuple[list[str], int]:
        """(links to follow, in page order, within MAX_LINKS_PER_PAGE and MAX_LINK_BYTES; how many
        in-scope links were left out for those limits)."""
        chosen: list[str] = []
        seen: set[str] = set()
        size = dropped = 0
        for link in links:
            url = normalise_url(link, base)
            if url is None or url in seen or not self.allows(url):
                continue
            seen.add(url)
            if len(chosen) >= MAX_LINKS_PER_PAGE or size + len(url) > MAX_LINK_BYTES:
                dropped += 1
                continue
            chosen.append(url)
            size += len(url)
        return chosen, dropped
