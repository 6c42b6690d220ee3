"""Page sizes and page tokens for list methods (AIP-158), the same for every store."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from quaero.errors import InvalidArgument, Reason

MAX_PAGE_SIZE = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """A request's page: how many rows (`size`) after which position (`after`, from the token)."""
    size: int
    after: int

    @classmethod
    def parse(cls, page_size: int, page_token: str, default: int = 50) -> Page:
        if page_size < 0:
            raise InvalidArgument(Reason.INVALID_PAGE_SIZE, "page_size cannot be negative", "page_size")
        return cls(min(page_size or default, MAX_PAGE_SIZE), _position(page_token))

    @property
    def limit(self) -> int:
        """Rows to ask the database for: one more than the page, to know whether another page follows."""
        return self.size + 1

    def cut(self, rows: Sequence[T], position: Callable[[T], int] | None = None) -> tuple[list[T], str]:
        """(this page's rows, the next page's token or ''). By default the token counts rows (an offset);
        `position` makes it the position of the last row instead (a keyset)."""
        page = list(rows[: self.size])
        if len(rows) <= self.size:
            return page, ""
        return page, str(position(page[-1]) if position else self.after + self.size)


def _position(page_token: str) -> int:
    if not page_token:
        return 0
    try:
        value = int(page_token)
    except ValueError:
        raise InvalidArgument(Reason.INVALID_PAGE_TOKEN, "page_token is not one this server returned",
                              "page_token") from None
    if value < 0:
        raise InvalidArgument(Reason.INVALID_PAGE_TOKEN, "page_token is not one this server returned", "page_token")
    return value
