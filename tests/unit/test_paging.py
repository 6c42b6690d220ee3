"""Page tokens (AIP-158): one helper for every list method."""
from __future__ import annotations

import pytest

from manager_service.storage.paging import MAX_PAGE_SIZE, Page
from quaero.errors import InvalidArgument


def test_a_page_cuts_one_extra_row_into_the_next_token() -> None:
    page = Page.parse(2, "")
    assert page.limit == 3 and page.cut(["a", "b", "c"]) == (["a", "b"], "2")
    assert Page.parse(2, "2").cut(["c"]) == (["c"], "")
    assert Page.parse(2, "").cut(["a", "b", "c"], position=lambda row: ord(row)) == (["a", "b"], str(ord("b")))


def test_sizes_default_and_are_capped() -> None:
    assert Page.parse(0, "", default=7).size == 7 and Page.parse(10**9, "").size == MAX_PAGE_SIZE


@pytest.mark.parametrize("size,token,field", [(-1, "", "page_size"), (1, "x", "page_token"), (1, "-5", "page_token")])
def test_bad_tokens_and_sizes_are_invalid_arguments(size: int, token: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Page.parse(size, token)
    assert caught.value.field == field
