"""CrawlSpec, RunPolicy and Definition: one set of defaults, checks that name the field, and one
mapping form that round-trips (through the proto too)."""
from __future__ import annotations

import math
from typing import Any

import pytest

from quaero.convert import crawl_mapping_from_proto, crawl_spec_to_proto, definition_mapping_from_proto, definition_to_proto
from quaero.crawl_spec import DEFAULT_LOGGED_OUT_PATTERNS, CrawlSpec, Definition, FailureAction, RunPolicy
from quaero.errors import InvalidArgument
from quaero.markers import compile_markers


def test_defaults_are_spelled_once() -> None:
    spec = CrawlSpec.from_mapping({"start_urls": ["https://Example.com/a"]})
    assert spec == CrawlSpec(start_urls=("https://example.com/a",))
    assert (spec.max_depth, spec.max_pages, spec.concurrency, spec.request_timeout_seconds) == (3, 1000, 8, 30.0)
    assert spec.logged_out_patterns == DEFAULT_LOGGED_OUT_PATTERNS and spec.same_site_only
    assert CrawlSpec.from_mapping({"start_urls": ["https://e.com/"], "logged_out_patterns": []}).logged_out_patterns \
        == DEFAULT_LOGGED_OUT_PATTERNS


@pytest.mark.parametrize("changes,field", [
    ({"start_urls": []}, "crawl.start_urls"),
    ({"start_urls": ["nope"]}, "crawl.start_urls[0]"),
    ({"start_urls": ["https://ok.test/", "https://u:p@ok.test/"]}, "crawl.start_urls[1]"),
    ({"start_urls": ["http://10.0.0.1/"]}, "crawl.start_urls[0]"),
    ({"max_depth": -1}, "crawl.max_depth"),
    ({"max_depth": 2.5}, "crawl.max_depth"),
    ({"max_pages": "10"}, "crawl.max_pages"),
    ({"concurrency": True}, "crawl.concurrency"),
    ({"per_host_delay_seconds": math.inf}, "crawl.per_host_delay_seconds"),
    ({"request_timeout_seconds": math.nan}, "crawl.request_timeout_seconds"),
    ({"include_patterns": ["ok", r"(a)\1"]}, "crawl.include_patterns[1]"),
    ({"exclude_patterns": "not a list"}, "crawl.exclude_patterns"),
    ({"allowed_networks": ["10.0.0.0/8", "ten"]}, "crawl.allowed_networks"),
    ({"user_agent": "line\nbreak"}, "crawl.user_agent"),
    ({"same_site_only": "yes"}, "crawl.same_site_only"),
    ({"surprise": 1}, "crawl.surprise"),
])
def test_a_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        CrawlSpec.from_mapping({"start_urls": ["https://ok.test/"], **changes})
    assert caught.value.field == field and caught.value.reason == "INVALID_DEFINITION"


def test_the_mapping_and_the_proto_round_trip() -> None:
    spec = CrawlSpec.from_mapping({"start_urls": ["https://a.test/", "http://b.test/x"], "max_depth": 0,
                                   "per_host_delay_seconds": 1, "include_patterns": ["/docs/"],
                                   "allowed_networks": ["10.20.0.0/16"], "ignore_robots_txt": True})
    assert CrawlSpec.from_mapping(spec.to_mapping()) == spec
    assert CrawlSpec.from_mapping(crawl_mapping_from_proto(crawl_spec_to_proto(spec))) == spec
    definition = Definition(id="d1", spec=spec, name="D", auth_id="a", policy=RunPolicy(3, FailureAction.STOP_ALL))
    assert Definition.from_mapping(definition_mapping_from_proto(definition_to_proto(definition))) == definition


def test_a_stored_spec_that_no_longer_passes_is_read_within_range() -> None:
    spec = CrawlSpec.from_config({"start_urls": ["https://a.test/"], "per_host_delay_seconds": 1e6,
                                  "request_timeout_seconds": math.inf, "concurrency": 0, "max_pages": None})
    assert (spec.per_host_delay_seconds, spec.request_timeout_seconds, spec.concurrency, spec.max_pages) == \
        (60.0, 30.0, 1, 1000)


@pytest.mark.parametrize("data,field", [({"max_child_failures": -1}, "job_definition.max_child_failures"),
                                        ({"failure_action": "panic"}, "job_definition.failure_action"),
                                        ({"type": "scraper"}, "job_definition.type"),
                                        ({"id": "bad id"}, "job_definition.id")])
def test_a_bad_definition_field_is_named(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Definition.from_mapping({"crawl": {"start_urls": ["https://a.test/"]}, **data})
    assert caught.value.field == field


@pytest.mark.parametrize(("marker", "why"), [
    ("form#login", "must be text:<RE2 pattern>"), ("css:", "must be text:"), ("text:(a)\\1", "not a valid RE2"),
    ("css:form[", "not a CSS selector"), ("xpath://form", "must be text:")])
def test_logged_out_markers_are_checked_when_the_definition_is_stored(marker: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        CrawlSpec.from_mapping({"start_urls": ["https://e.com/"], "logged_out_markers": ["css:form#login", marker]})
    assert refused.value.field == "crawl.logged_out_markers[1]" and why in refused.value.message


def test_logged_out_markers_match_a_login_form_served_in_place_and_nothing_else() -> None:
    markers = compile_markers(("css:form#login input[type=password]", "text:(?i)your session has expired"))
    login = "<html><body><form id='login'><input name=u><input type=password name=p></form></body></html>"
    assert markers.match("Sign in", login) == "css:form#login input[type=password]"
    assert markers.match("Your session has expired. Sign in again.", "<p>x</p>") == "text:(?i)your session has expired"
    page = "<html><body><form id='search'><input type=password></form><p>login tips</p></body></html>"
    assert markers.match("login tips", page) == ""
    assert not compile_markers(()) and compile_markers(("text:x",))
