"""Bodies decompressed as a stream up to a cap, and text decoded as a browser would."""
from __future__ import annotations

import gzip
import zlib

import pytest

from executor_service.crawl.content import BadContentEncoding, BodyTooLarge, decode_text, read_body
from tests.support.hostile import gzipped_zeros


def test_decompression_stops_at_the_cap() -> None:
    bomb = gzipped_zeros(50 * 1024 * 1024)
    with pytest.raises(BodyTooLarge):
        read_body([bomb[i:i + 8192] for i in range(0, len(bomb), 8192)], "gzip", limit=1024 * 1024)
    assert len(read_body([bomb], "gzip", limit=1000, truncate=True)) == 1000
    assert read_body([gzip.compress(b"a") + gzip.compress(b"b")], "x-gzip") == b"ab"
    assert read_body([zlib.compress(b"z")[2:-4]], "deflate") == b"z"  # raw deflate, as some servers send
    with pytest.raises(BadContentEncoding):
        read_body([b"plain"], "gzip")


def test_text_is_decoded_as_a_browser_would() -> None:
    assert decode_text("é".encode("latin-1"), "text/html; charset=ISO-8859-1") == "é"
    assert decode_text(b'<meta charset="windows-1252">\x93', "text/html") == '<meta charset="windows-1252">\u201c'
    assert decode_text(b"\xff", "text/plain; charset=rot13") == "\ufffd"
