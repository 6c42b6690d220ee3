"""Page tokens (AIP-158) and page cuts: one helper for every list method."""
from __future__ import annotations

import pytest

from manager_service.storage.paging import MAX_PAGE_SIZE, Listing, PageTokens, page_request
from quaero.errors import InvalidArgument

TOKENS = PageTokens(bytes(32))


def test_a_token_round_trips_its_position_for_the_same_filters_only() -> None:
    token = TOKENS.make("ListJobs|parent-a", ["2026-01-01T00:00:00+00:00", "id-9"])
    assert TOKENS.read(token, "ListJobs|parent-a") == ["2026-01-01T00:00:00+00:00", "id-9"]
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.read(token, "ListJobs|parent-b")
    assert caught.value.reason == "PAGE_TOKEN_MISMATCH" and caught.value.field == "page_token"


@pytest.mark.parametrize("token", ["2", "9223372036854775808", "-5", "x.y", "....", "eyJhIjoxfQ.AAAA"])
def test_tokens_this_server_did_not_make_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.read(token, "ListJobs|")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_an_edited_token_or_one_signed_with_another_key_is_invalid() -> None:
    token = TOKENS.make("s", [1])
    payload, mac = token.split(".")
    edited = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
    for bad in (edited, PageTokens(bytes(range(32))).make("s", [1])):
        with pytest.raises(InvalidArgument):
            TOKENS.read(bad, "s")


def test_sizes_default_and_are_capped_and_negative_is_invalid() -> None:
    assert page_request(TOKENS, 0, "", "s", default=7).size == 7
    assert page_request(TOKENS, 10**9, "", "s").size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as caught:
        page_request(TOKENS, -1, "", "s")
    assert caught.value.field == "page_size"


def test_a_page_stops_at_its_size_or_its_byte_budget_and_resumes_after_its_last_row() -> None:
    rows = ["a" * 10, "b" * 10, "c" * 10, "d" * 10]
    by_size = Listing(rows, 3, lambda row: f"after-{row[0]}")
    assert by_size.cut(str.upper, len) == (["A" * 10, "B" * 10, "C" * 10], "after-c")
    assert by_size.cut(str.upper, len, budget=25) == (["A" * 10, "B" * 10], "after-b")
    # a single row over the budget still goes out (the row limits keep rows far below it)
    assert Listing(rows[:1], 3, lambda row: "x").cut(str, len, budget=1) == (["a" * 10], "")
    assert Listing(rows[:2], 3, lambda row: "x").cut(str, len) == (rows[:2], "")
