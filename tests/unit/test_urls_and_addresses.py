"""URLs in one normal form, and the network policy's verdict on addresses."""
from __future__ import annotations

import pytest

from quaero.network_policy import NetworkPolicy, parse_networks
from quaero.urls import normalise_url


@pytest.mark.parametrize("url,expected", [
    ("HTTP://Example.COM:80/a b?q=é#frag", "http://example.com/a%20b?q=%C3%A9"),
    ("https://bücher.example/", "https://xn--bcher-kva.example/"),
    ("http://user:secret@example.com/", "http://example.com/"),
    ("http://example.com./", "http://example.com./"),
    ("http://[::1]:8080", "http://[::1]:8080/"),
    ("javascript:alert(1)", None), ("data:,x", None), ("http://exa mple.com/", None), ("http://a.test:99999/", None),
    ("http://a.test/" + "x" * 5000, None)])
def test_urls_have_one_normal_form(url: str, expected: str | None) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("address,refused", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.1", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.0.0.1", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "reserved"), ("224.0.0.1", "multicast"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:7f00:1::", "loopback")])
def test_the_network_policy_names_what_it_refuses(address: str, refused: str | None) -> None:
    assert NetworkPolicy().refusal(address) == refused
    assert NetworkPolicy(allow_private=True).refusal(address) is None


def test_allowed_networks_open_exactly_those_networks() -> None:
    policy = NetworkPolicy(allowed=parse_networks(["10.20.0.0/16", "::1/128"]))
    assert policy.refusal("10.20.3.4") is None and policy.refusal("::1") is None
    assert policy.refusal("10.21.0.1") == "private" and policy.refusal("127.0.0.1") == "loopback"
