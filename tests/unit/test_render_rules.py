"""The pure rules of render = "js": cookies as Playwright takes them (same scope as the jar), the gate's
check of the browser's Cookie header, which pages may share a context, and the definition option."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from executor_service.crawl.cookie_jar import CookieJar
from executor_service.crawl.fetcher import FetchPolicy
from executor_service.render.browser import browser_cookie, context_key
from executor_service.render.gate import Gate, PageState
from quaero.api.manager.v1 import definitions_pb2
from quaero.convert import crawl_mapping_from_proto, crawl_spec_to_proto
from quaero.cookies import StoredCookie
from quaero.crawl_spec import CrawlSpec, Render
from quaero.errors import InvalidArgument


def test_host_only_and_domain_cookies_keep_their_scope_in_the_browser() -> None:
    host_only = browser_cookie(StoredCookie("a", "1", "app.site.test"))
    assert host_only["domain"] == "app.site.test" and "url" not in host_only  # no dot: host-only
    domain = browser_cookie(StoredCookie("b", "2", "site.test", host_only=False, path="/x"))
    assert (domain["domain"], domain["path"]) == (".site.test", "/x")


def test_secure_http_only_expiry_and_same_site_are_carried_over() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    mapped = browser_cookie(StoredCookie("s", "v", "a.test", secure=True, http_only=True, expires=expires,
                                         same_site="strict"))
    assert (mapped["secure"], mapped["httpOnly"], mapped["expires"], mapped["sameSite"]) == (
        True, True, expires.timestamp(), "Strict")
    assert browser_cookie(StoredCookie("s", "v", "a.test"))["expires"] == -1  # a session cookie
    assert "sameSite" not in browser_cookie(StoredCookie("s", "v", "a.test"))


def test_same_site_none_without_secure_becomes_lax_rather_than_silently_dropped() -> None:
    assert browser_cookie(StoredCookie("s", "v", "a.test", same_site="None"))["sameSite"] == "Lax"
    assert browser_cookie(StoredCookie("s", "v", "a.test", secure=True, same_site="None"))["sameSite"] == "None"


def _state(*cookies: StoredCookie) -> PageState:
    return PageState(CookieJar(cookies), frozenset(c.name for c in cookies), FetchPolicy())


def test_the_gate_removes_a_credential_the_childs_jar_would_not_send_there() -> None:
    state = _state(StoredCookie("sid", "secret", "app.site.test"), StoredCookie("deep", "d", "app.site.test",
                                                                              path="/only"))
    header = "sid=secret; deep=d; theme=dark"
    assert Gate._cookie_header(state, "http://app.site.test/only/x", header) == header
    assert Gate._cookie_header(state, "http://app.site.test/", header) == "sid=secret; theme=dark"
    assert Gate._cookie_header(state, "http://evil.test/", header) == "theme=dark"  # page-made cookies pass
    assert Gate._cookie_header(state, "http://app.site.test/", "sid=forged") == ""  # a value it never stored
    assert state.cookies_removed == 4


def test_pages_share_a_context_only_within_one_run_and_one_set_of_credentials() -> None:
    assert context_key("run-1", "alice", "ua") == context_key("run-1", "alice", "ua")
    assert context_key("run-1", "alice", "ua") != context_key("run-2", "alice", "ua")
    assert context_key("run-1", "alice", "ua") != context_key("run-1", "bob", "ua")
    assert context_key("run-1", "alice", "ua") != context_key("run-1", "", "ua")
    assert context_key("run-1", "alice", "ua") != context_key("run-1", "alice", "other agent")


def test_render_is_checked_and_kept_through_the_proto() -> None:
    spec = CrawlSpec.from_mapping({"start_urls": ["https://a.test/"], "render": "js"})
    assert spec.render is Render.JS and spec.to_mapping()["render"] == "js"
    message = crawl_spec_to_proto(spec)
    assert message.render == definitions_pb2.RENDER_MODE_JS
    assert CrawlSpec.from_mapping(crawl_mapping_from_proto(message)).render is Render.JS
    assert CrawlSpec.from_mapping({"start_urls": ["https://a.test/"]}).render is Render.HTTP
    unset = definitions_pb2.CrawlConfig(start_urls=["https://a.test/"])
    assert CrawlSpec.from_mapping(crawl_mapping_from_proto(unset)).render is Render.HTTP
    with pytest.raises(InvalidArgument) as error:
        CrawlSpec.from_mapping({"start_urls": ["https://a.test/"], "render": "chrome"})
    assert error.value.field == "crawl.render"
    unknown = definitions_pb2.CrawlConfig(start_urls=["https://a.test/"], render=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        CrawlSpec.from_mapping(crawl_mapping_from_proto(unknown))
