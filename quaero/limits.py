"""Limits both sides keep: what a stored document may hold (the crawler cuts a page's text before
sending it, the manager enforces it for every client) and the largest gRPC message.

A document always fits, whatever the page held: text is cut (and flagged) at MAX_TEXT_BYTES of UTF-8,
the title at MAX_TITLE_CHARS; NUL characters (which PostgreSQL text cannot hold) are removed. URLs may
have any length: the unique key is their SHA-256.
"""
from __future__ import annotations

MAX_TEXT_BYTES = 1024 * 1024
# The largest message either side accepts. The biggest a crawl sends is one page's record
# (CompleteLeasedJob): at most 1 MiB of text, 5,000 links of at most 1 MiB in all, names and keys: well
# under this (README, "Limits").
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# What the servers' transport takes in: requests between the two limits are answered REQUEST_TOO_LARGE
# with the limit (by quaero.rpc.interceptors), not gRPC's bare RESOURCE_EXHAUSTED; past this one,
# gRPC itself refuses them ("Received message larger than max").
MAX_RECEIVE_BYTES = 4 * MAX_MESSAGE_BYTES
MAX_TITLE_CHARS = 1024
MAX_DOCUMENT_URL_CHARS = 64 * 1024  # the crawl's URLs are far shorter (quaero.urls.MAX_URL_LENGTH)
MAX_CONTENT_TYPE_CHARS = 255


def truncate_utf8(text: str, limit: int) -> tuple[str, bool]:
    """text cut to at most `limit` bytes of UTF-8 on a character boundary; (text, was_cut)."""
    if len(text) <= limit // 4:
        return text, False  # cannot be over the limit: a character is at most 4 bytes
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", "ignore"), True


def without_nul(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text
