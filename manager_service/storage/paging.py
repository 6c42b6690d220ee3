"""Paging for every list method (AIP-158): keyset page tokens, bound to the request's filters and signed.

A token carries the sort key of the last row the client saw (never an offset), so a row created
between two requests neither repeats nor pushes another off the next page. It also carries a digest
of the filters it was made for, and an HMAC under a key derived from the manager's secret key: a token
used with other filters, edited, or made up is INVALID_ARGUMENT, and tokens stay valid across restarts.

A page stops at page_size rows or before MAX_PAGE_BYTES of answer, whichever comes first
(Listing.cut measures what the caller will send), so every answer fits gRPC's default 4 MiB.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from quaero.errors import InvalidArgument, Reason

MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 3 * 1024 * 1024  # under gRPC's default 4 MiB receive limit, with room for the envelope
T = TypeVar("T")
M = TypeVar("M")


class PageTokens:
    """Makes and checks page tokens: base64url(JSON [filters digest, position]) "." base64url(HMAC)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def _scope(scope: str) -> str:
        return hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def make(self, scope: str, position: list[Any]) -> str:
        payload = json.dumps([self._scope(scope), position], separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._mac(payload))

    def read(self, token: str, scope: str) -> list[Any] | None:
        """The position a token holds; None for no token; InvalidArgument for a token that is not one this
        server made for these filters."""
        if not token:
            return None
        try:
            encoded, _, mac = token.partition(".")
            payload = _unb64(encoded)
            valid = hmac.compare_digest(self._mac(payload), _unb64(mac))
            digest, position = json.loads(payload) if valid else (None, None)
        except (ValueError, TypeError):
            valid, digest, position = False, None, None
        if not valid or not isinstance(position, list):
            raise InvalidArgument(Reason.INVALID_PAGE_TOKEN, "page_token is not one this server returned (pass "
                                  "next_page_token back unchanged)", "page_token")
        if digest != self._scope(scope):
            raise InvalidArgument(Reason.PAGE_TOKEN_MISMATCH, "page_token was returned for a request with other "
                                  "filters; repeat the first request's filters, or start again without a token",
                                  "page_token")
        return position


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: list[Any] | None  # the position of the last row of the previous page

    @property
    def limit(self) -> int:
        """Rows to ask the database for: one more than the page, to know whether another page follows."""
        return self.size + 1


def page_request(tokens: PageTokens, page_size: int, page_token: str, scope: str, default: int = 50) -> PageRequest:
    if page_size < 0:
        raise InvalidArgument(Reason.INVALID_PAGE_SIZE, "page_size cannot be negative", "page_size")
    return PageRequest(min(page_size or default, MAX_PAGE_SIZE), tokens.read(page_token, scope))


@dataclass
class Listing(Generic[T]):
    """A page's rows (up to size + 1), and how to make the token that resumes after a row."""
    rows: Sequence[T]
    size: int
    token_after: Callable[[T], str]

    def cut(self, convert: Callable[[T], M], size_of: Callable[[M], int],
            budget: int = MAX_PAGE_BYTES) -> tuple[list[M], str]:
        """(the converted rows of this page, next_page_token or ''): at most `size` rows, and no more than
        `budget` bytes as `size_of` measures them (always at least one row, which the limits keep small)."""
        out: list[M] = []
        used = 0
        for index, row in enumerate(self.rows[: self.size]):
            message = convert(row)
            used += size_of(message)
            if out and used > budget:
                return out, self.token_after(self.rows[index - 1])
            out.append(message)
        if len(self.rows) > self.size:
            return out, self.token_after(self.rows[self.size - 1])
        return out, ""

    def items(self) -> tuple[list[T], str]:
        """The rows without measuring (for callers in this process)."""
        return self.cut(lambda row: row, lambda _row: 0)


def keyset_page(query: Any, moment: Any, row_id: Any, page: PageRequest, newest_first: bool = True) -> Any:
    """The query in (moment, id) order (newest first, or oldest first), resuming after the page token's
    position, one page (+1)."""
    if page.after is not None:
        after, last_id = unstamp(page.after[0]), page.after[1]  # signed: our own [stamp, id]
        if newest_first:
            query = query.where(sa.or_(moment < after, sa.and_(moment == after, row_id < last_id)))
        else:
            query = query.where(sa.or_(moment > after, sa.and_(moment == after, row_id > last_id)))
    order = (moment.desc(), row_id.desc()) if newest_first else (moment, row_id)
    return query.order_by(*order).limit(page.limit)


def stamp(moment: datetime) -> str:
    """A timestamp as a token holds it."""
    return moment.isoformat()


def unstamp(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidArgument(Reason.INVALID_PAGE_TOKEN, "page_token is not one this server returned",
                              "page_token") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
