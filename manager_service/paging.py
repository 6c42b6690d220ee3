"""Page sizes and page tokens for list methods (AIP-158), the same for every store."""
from __future__ import annotations

from .errors import InvalidArgument

MAX_PAGE_SIZE = 1000


def page_size(requested: int, default: int) -> int:
    if requested < 0:
        raise InvalidArgument("INVALID_PAGE_SIZE", "page_size cannot be negative", "page_size")
    return min(requested or default, MAX_PAGE_SIZE)


def offset(page_token: str) -> int:
    if not page_token:
        return 0
    try:
        value = int(page_token)
    except ValueError:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this server returned",
                              "page_token") from None
    if value < 0:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this server returned", "page_token")
    return value
