"""next_hop, table-driven: what one response means for the page being fetched."""
from __future__ import annotations

from typing import Any

import pytest

from executor_service.crawl.hops import Done, Redirect, Stop, next_hop
from quaero.crawl_spec import DEFAULT_LOGGED_OUT_PATTERNS
from quaero.patterns import compile_all

PATTERNS = compile_all(DEFAULT_LOGGED_OUT_PATTERNS)
PAGE = "https://app.test/docs/a"


@pytest.mark.parametrize("status,location,retry_after,expected", [
    (200, None, None, Done()),
    (404, None, None, Done()),  # the page is what the server says it is
    (500, None, None, Done()),
    (302, None, None, Done()),  # a redirect without Location is the page itself
    (304, "/elsewhere", None, Done()),  # not a redirect code
    (301, "/docs/b", None, Redirect("https://app.test/docs/b")),
    (307, "b?x=1#frag", None, Redirect("https://app.test/docs/b?x=1")),
    (308, "//other.test/p", None, Redirect("https://other.test/p")),
    (303, "http://APP.test:80/Up", None, Redirect("http://app.test/Up")),
    (302, "https://app.test/a b", None, Redirect("https://app.test/a%20b")),
])
def test_what_a_response_means(status: int, location: str | None, retry_after: str | None, expected: Any) -> None:
    assert next_hop(PAGE, status, location, retry_after, PATTERNS) == expected


@pytest.mark.parametrize("status,location,retry_after,reason,wait", [
    (401, None, None, "AUTH_REJECTED", None),
    (403, "/login", None, "AUTH_REJECTED", None),
    (302, "/users/sign_in?next=/docs", None, "AUTH_EXPIRED", None),
    (302, "https://sso.test/LOGIN", None, "AUTH_EXPIRED", None),
    (302, "/account/logout", None, "LOGOUT_REDIRECT", None),
    (302, "javascript:alert(1)", None, "BAD_REDIRECT", None),
    (301, "data:text/html,x", None, "BAD_REDIRECT", None),
    (302, "ftp://files.test/x", None, "BAD_REDIRECT", None),
    (302, "/" + "x" * 5000, None, "BAD_REDIRECT", None),
    (429, None, "12", "RATE_LIMITED", 12.0),
    (429, None, None, "RATE_LIMITED", 5.0),
    (503, None, "100000", "SERVER_UNAVAILABLE", 60.0),
])
def test_what_ends_a_page(status: int, location: str | None, retry_after: str | None, reason: str,
                          wait: float | None) -> None:
    decision = next_hop(PAGE, status, location, retry_after, PATTERNS)
    assert isinstance(decision, Stop)
    assert decision.verdict.reason == reason and decision.verdict.retry_after == wait


def test_the_login_pattern_looks_at_the_path_only() -> None:
    assert next_hop(PAGE, 302, "https://login.test/welcome", None, PATTERNS) == Redirect("https://login.test/welcome")
