"""What a crawl reads from a page and which links it may follow. Knows nothing of gRPC or HTTP."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit, urlunsplit

from publicsuffixlist import PublicSuffixList

LOGOUT = re.compile(r"(^|[/_.-])(log-?out|sign-?out|log_out|sign_out)([/_.?-]|$)|[?&]action=(logout|signout)",
                    re.IGNORECASE)
SKIPPED_TAGS = {"script", "style", "noscript", "template"}
_PSL = PublicSuffixList()


@dataclass
class ParsedPage:
    title: str = ""
    text: str = ""
    links: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title_parts: list[str] = []
        self.text_parts: list[str] = []
        self.links: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("a", "area"):
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip and data.strip():
            self.text_parts.append(data.strip())


def parse_html(html: str) -> ParsedPage:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return ParsedPage(title=" ".join("".join(parser.title_parts).split()), text="\n".join(parser.text_parts),
                      links=parser.links)


def normalise_url(url: str, base: str | None = None) -> str | None:
    """Absolute http(s) URL without fragment, lower-case scheme and host, no default port; None if not crawlable."""
    try:
        absolute = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(absolute)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def is_logout_link(url: str) -> bool:
    parts = urlsplit(url)
    return bool(LOGOUT.search(parts.path)) or bool(LOGOUT.search("?" + parts.query if parts.query else ""))


def site_of(host: str) -> str:
    """The registrable domain (eTLD+1) of a host, or the host itself (IP addresses, localhost)."""
    host = host.lower().rstrip(".")
    return _PSL.privatesuffix(host) or host


@dataclass
class LinkScope:
    """Which discovered links become children."""
    start_urls: list[str]
    same_site_only: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sites = {site_of(urlsplit(url).hostname or "") for url in self.start_urls}
        self._include = [re.compile(p) for p in self.include]
        self._exclude = [re.compile(p) for p in self.exclude]

    def allows(self, url: str) -> bool:
        if is_logout_link(url):
            return False
        if self.same_site_only and site_of(urlsplit(url).hostname or "") not in self._sites:
            return False
        if self._include and not any(p.search(url) for p in self._include):
            return False
        return not any(p.search(url) for p in self._exclude)

    def follow(self, links: Iterable[str], base: str) -> list[str]:
        chosen: list[str] = []
        seen: set[str] = set()
        for link in links:
            url = normalise_url(link, base)
            if url and url not in seen and self.allows(url):
                seen.add(url)
                chosen.append(url)
        return chosen
