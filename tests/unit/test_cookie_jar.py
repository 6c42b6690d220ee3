"""A child's cookie jar: caps and eviction, Secure cookies left alone by http, trailing-dot hosts,
expiry clamped to 400 days, names and values outside RFC 6265 refused by name."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from executor_service.crawl.cookie_jar import CookieJar
from quaero.cookies import StoredCookie


def test_the_jar_keeps_at_most_180_cookies_per_site_evicting_the_least_recently_used() -> None:
    jar = CookieJar([StoredCookie("sid", "s", "app.test")])
    jar.header_for("http://app.test/")
    for n in range(179):
        assert jar.store_set_cookie("http://app.test/", f"c{n}=v") is None
    jar.header_for("http://app.test/")  # everything just used
    jar.store_set_cookie("http://app.test/", "newest=1")
    names = [c.name for c in jar.cookies_for("http://app.test/")]
    assert len(names) == 180 and "newest" in names
    for n in range(500):
        jar.store_set_cookie("http://other.app.test/", f"o{n}=v; Domain=app.test")
    assert len(jar) == 180


def test_secure_cookies_are_left_alone_by_http() -> None:
    jar = CookieJar([StoredCookie("sid", "orig", "app.test", secure=True)])
    assert jar.store_set_cookie("http://app.test/", "sid=evil")
    assert jar.store_set_cookie("http://app.test/x", "sid=evil; Path=/x")
    assert jar.store_set_cookie("http://app.test/", "new=1; Secure")
    assert jar.store_set_cookie("https://app.test/", "sid=replaced; Secure") is None
    assert jar.header_for("https://app.test/") == "sid=replaced"


def test_trailing_dot_hosts_are_other_hosts() -> None:
    jar = CookieJar([StoredCookie("a", "1", "app.test"), StoredCookie("b", "2", "app.test", host_only=False)])
    assert jar.header_for("http://app.test./") == ""
    assert jar.store_set_cookie("http://app.test./", "c=3") is None
    assert jar.header_for("http://app.test/") == "a=1; b=2" and jar.header_for("http://app.test./") == "c=3"


@pytest.mark.parametrize("address", ["127.0.0.3", "[::1]", "[2001:db8::5]"])
def test_a_domain_attribute_that_is_the_address_itself_sets_a_cookie_for_exactly_that_address(address: str) -> None:
    """RFC 6265 §5.1.3: identical strings domain-match, so `Domain=127.0.0.3` from 127.0.0.3 is kept (host-only,
    as browsers keep it); another address, or a name, never gets it."""
    bare = address.strip("[]")
    jar = CookieJar()
    assert jar.store_set_cookie(f"http://{address}:8080/", f"a=b; Domain={bare}") is None
    assert jar.header_for(f"http://{address}:8080/x") == "a=b"
    assert [(c.domain, c.host_only) for c in jar.cookies_for(f"http://{address}/")] == [(bare, True)]
    assert jar.header_for("http://127.0.0.4/") == "" and jar.header_for("http://localhost/") == ""
    assert jar.store_set_cookie(f"http://{address}/", "c=d; Domain=127.0.0.9") is None  # another address: ignored
    assert jar.store_set_cookie(f"http://{address}/", "e=f; Domain=0.0.3") is None  # a suffix of an address: ignored
    assert jar.header_for(f"http://{address}/") == "a=b"


def test_expiry_is_clamped_to_400_days_and_never_overflows() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    jar = CookieJar()
    for header in ("a=1; Max-Age=999999999999", "b=1; Expires=Fri, 31 Dec 9999 23:59:59 GMT",
                   "c=1; Expires=not a date", "d=1; Max-Age=-99999999999999999999"):
        assert jar.store_set_cookie("http://a.test/", header, received_at=now) is None
    expiries = {c.name: c.expires for c in jar.cookies_for("http://a.test/", at=now)}
    assert expiries == {"a": now + timedelta(days=400), "b": now + timedelta(days=400), "c": None}


@pytest.mark.parametrize("header", ["u=caf\u00e9", "s=two words", 'q="a,b"', "b=back\\slash", "x=" + "v" * 5000,
                                    "=nameless", "sp ace=1"])
def test_values_and_names_outside_rfc_6265_are_refused_by_name(header: str) -> None:
    jar = CookieJar()
    refused = jar.store_set_cookie("http://a.test/", header)
    assert refused is not None and len(jar) == 0
    name, reason = refused
    assert header.split("=", 1)[1][:20] not in reason or header.split("=", 1)[1] == ""
