"""A response body read within a size cap, decompressed as a stream (so a gzip bomb costs no more than
the cap), and decoded to text. Knows nothing of gRPC or of where the bytes come from."""
from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterable

MAX_BODY_BYTES = 5 * 1024 * 1024  # a page's body after decompression
TEXT_TYPES = ("text/", "application/xhtml+xml", "application/xml", "application/json")
MAX_ENCODINGS = 2  # "gzip, gzip" is legal; a longer chain is not something a real site sends
ACCEPT_ENCODING = "gzip, deflate"
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit // 1024} KiB")
        self.limit = limit


class BadContentEncoding(Exception):
    pass


class _Inflate:
    """zlib/gzip/raw-deflate decompression that never produces more than asked for at once."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._raw_tried = False
        self._decompressor = self._new()

    def _new(self) -> zlib._Decompress:
        # gzip: a gzip header; deflate: zlib-wrapped, or raw deflate as some servers send it.
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._kind == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decompresses data into at most room + 1 bytes (one more tells the caller it is over)."""
        out = bytearray()
        while data and len(out) <= room:
            try:
                out += self._decompressor.decompress(data, room + 1 - len(out))
            except zlib.error:
                if self._kind == "deflate" and not self._raw_tried and not out:
                    self._raw_tried = True
                    self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise BadContentEncoding(f"the {self._kind} body is corrupt") from None
            if self._decompressor.unconsumed_tail:
                data = self._decompressor.unconsumed_tail
            elif self._decompressor.eof and self._decompressor.unused_data and self._kind == "gzip":
                data = self._decompressor.unused_data  # another gzip member follows
                self._decompressor = self._new()
            else:
                data = b""
        return bytes(out)


def _stages(content_encoding: str) -> list[_Inflate]:
    names = [part.strip().lower() for part in content_encoding.split(",") if part.strip()]
    names = [name for name in names if name != "identity"]
    if len(names) > MAX_ENCODINGS:
        raise BadContentEncoding(f"{len(names)} content encodings in a chain")
    stages = []
    for name in reversed(names):  # the last encoding applied is undone first
        if name in ("gzip", "x-gzip"):
            stages.append(_Inflate("gzip"))
        elif name == "deflate":
            stages.append(_Inflate("deflate"))
        else:
            raise BadContentEncoding(f"content-encoding {name[:40]!r} is not supported (asked for {ACCEPT_ENCODING})")
    return stages


def read_body(chunks: Iterable[bytes], content_encoding: str = "", limit: int = MAX_BODY_BYTES,
              truncate: bool = False) -> bytes | bytearray:
    """The decoded body, at most `limit` bytes: over it, BodyTooLarge, or (truncate=True) the first
    `limit` bytes. Reading stops as soon as the limit is crossed; the body is built in one buffer (no
    list of chunks joined at the end, which held it twice)."""
    stages = _stages(content_encoding)
    body = bytearray()
    for chunk in chunks:
        data = chunk
        for stage in stages:
            data = stage.feed(data, limit - len(body))
            if not data:
                break
        if not data:
            continue
        if len(body) + len(data) > limit:
            if truncate:
                body += data[: limit - len(body)]
                return bytes(body)
            raise BodyTooLarge(limit)
        body += data
    return bytes(body) if truncate else body  # a bytearray is a bytes-like body; no copy


def charset_of(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return _text_codec(value.strip().strip("\"'"))
    return None


def _text_codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # Codecs such as 'zlib', 'base64' or 'rot13' are not text encodings.
    return info.name if getattr(info, "_is_text_encoding", True) else None


def is_text(content_type: str) -> bool:
    content_type = content_type.lower().strip()
    return "html" in content_type or content_type.startswith(TEXT_TYPES)


def decode_text(body: bytes | bytearray, content_type: str) -> str:
    """Text as a browser would read it: the header's charset, else a <meta charset> in the first
    kilobyte, else UTF-8; undecodable bytes become U+FFFD."""
    codec = charset_of(content_type)
    if codec is None and "html" in content_type.lower():
        found = _CHARSET.search(body[:1024])
        if found:
            codec = _text_codec(found.group(1).decode("ascii"))
    try:
        return body.decode(codec or "utf-8", errors="replace")
    except (LookupError, UnicodeError):
        return body.decode("utf-8", errors="replace")
