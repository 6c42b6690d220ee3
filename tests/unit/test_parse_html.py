"""parse_html keeps one parser per thread: nothing of one page may reach the next, whatever state the
first left the parser in, and a page too big to keep a parser for is parsed the same way."""
from __future__ import annotations

from executor_service.crawl.links import REUSED_PARSER_MAX_CHARS, parse_html


def test_a_page_reads_the_same_after_any_other_page() -> None:
    clean = "<html><title>Two</title><body><p>second text</p><a href='/b'>b</a></body></html>"
    alone = parse_html(clean)
    assert (alone.title, alone.links, alone.text) == ("Two", ["/b"], "second text\nb")
    leftovers = [
        "<html><title>One</title><script>var x = '<a href=/leak>'",  # ends inside a script
        "<title>Unclosed title <a href='/x'>",  # ends inside the title
        "<div>" * 5000 + "<a href='/deep'>deep</a>",  # deep nesting, never closed
        "\x00\ufffd<html><body>" + "<a href='/many'>" * 50,
        "<p>" + "x" * (REUSED_PARSER_MAX_CHARS + 10) + "</p><a href='/big'>big</a>",  # its own parser
    ]
    for first in leftovers:
        parse_html(first)
        after = parse_html(clean)
        assert (after.title, after.links, after.text) == (alone.title, alone.links, alone.text), first[:40]
