"""By default a crawl reaches public addresses only, checked on the resolved address of every hop;
a definition opts in for private ones (allow_private_networks) or for chosen networks
(allowed_networks). The test sites run on 127.0.0.1, 127.0.0.2 and ::1."""
from __future__ import annotations

import socket
import time

import grpc
import pytest

from quaero.api.manager.v1 import jobs_pb2
from quaero.testing.harness import CrawlHarness
from quaero.testing.site import Response, html
from tests.support.grpc_errors import expect_error

APP = "app.site.test"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("url,kind", [
    ("http://127.0.0.1/", "loopback"), ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]:8080/", "loopback"), ("http://localhost/", "loopback"), ("http://10.1.2.3/", "private"),
    ("http://0.0.0.0/", "unspecified"), ("http://[::ffff:127.0.0.1]/", "loopback")])
def test_a_start_url_on_a_private_address_needs_an_opt_in(harness: CrawlHarness, url: str, kind: str) -> None:
    error = expect_error(lambda: harness.definition([url], allowed_networks=[]), grpc.StatusCode.INVALID_ARGUMENT,
                         "INVALID_DEFINITION", "job_definition.crawl.start_urls[0]")
    assert f"{kind} address" in error.details() and "allow_private_networks" in error.details()
    assert harness.definition([url], allow_private_networks=True)


def test_a_start_url_with_a_password_is_refused_without_echoing_it(harness: CrawlHarness) -> None:
    error = expect_error(lambda: harness.definition(["https://alice:hunter2-secret@app.example.com/"]),
                         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION", "job_definition.crawl.start_urls[0]")
    assert "user name or password" in error.details() and "hunter2-secret" not in error.details()


def test_a_bad_allowed_network_is_refused_naming_it(harness: CrawlHarness) -> None:
    error = expect_error(lambda: harness.definition(["http://app.example.com/"],
                                                    allowed_networks=["10.0.0.0/8", "not-a-network"]),
                         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION", "job_definition.crawl.allowed_networks")
    assert "crawl.allowed_networks[1]" in error.details()


def test_without_an_opt_in_a_name_that_resolves_to_loopback_is_blocked(harness: CrawlHarness) -> None:
    site = harness.site({(APP, "/"): html("home")})
    started = time.monotonic()
    result = harness.crawl([f"http://{APP}:{site.port}/"], allowed_networks=[])
    [child] = result.children
    assert child.status == jobs_pb2.JOB_STATUS_FAILED and child.error_reason == "BLOCKED_ADDRESS"
    assert "loopback" in child.error and time.monotonic() - started < 5
    assert site.requests == [], "a blocked address was connected to"


def test_redirects_links_and_rebinding_to_addresses_outside_the_opt_in_are_blocked(harness: CrawlHarness) -> None:
    inside = harness.site({})
    elsewhere = harness.site({("*", "/"): html("must not be reached")}, host="127.0.0.2")
    links = [f"http://127.0.0.2:{elsewhere.port}/", f"http://rebind.site.test:{elsewhere.port}/",
             "http://169.254.169.254/latest/meta-data/", "/hop"]
    ipv6 = harness.site({("*", "/"): html("must not be reached")}, host="::1") if has_ipv6_loopback() else None
    if ipv6 is not None:
        links.append(f"http://[::1]:{ipv6.port}/")
    inside.handler.routes.update({
        (APP, "/"): html("home", *links),
        (APP, "/hop"): Response(status=302, headers=[("Location", f"http://127.0.0.2:{elsewhere.port}/")])})
    result = harness.crawl([f"http://{APP}:{inside.port}/"], same_site_only=False, max_child_failures=10,
                           allowed_networks=["127.0.0.1/32"])
    assert [d.title for d in result.documents] == ["home"]
    blocked = [c for c in result.children if c.depth == 1]
    assert len(blocked) == len(links)
    assert all(c.error_reason == "BLOCKED_ADDRESS" for c in blocked), [(c.name, c.error_reason) for c in blocked]
    assert elsewhere.requests == [] and (ipv6 is None or ipv6.requests == [])


def test_allow_private_networks_reaches_them_all(harness: CrawlHarness) -> None:
    elsewhere = harness.site({("*", "/"): html("second loopback")}, host="127.0.0.2")
    inside = harness.site({(APP, "/"): html("home", f"http://127.0.0.2:{elsewhere.port}/")})
    result = harness.crawl([f"http://{APP}:{inside.port}/"], same_site_only=False, allow_private_networks=True)
    assert sorted(d.title for d in result.documents) == ["home", "second loopback"]


def test_localhost_is_reached_through_its_allowed_address(harness: CrawlHarness) -> None:
    site = harness.site({("localhost", "/"): html("localhost")})
    result = harness.crawl([f"http://localhost:{site.port}/"], allowed_networks=["127.0.0.1/32"])
    assert [d.title for d in result.documents] == ["localhost"]
