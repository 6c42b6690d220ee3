"""robots.txt rules per RFC 9309: groups, wildcards, the most specific match, linear matching."""
from __future__ import annotations

import pytest

from executor_service.crawl.robots import RobotsRules


@pytest.mark.parametrize("rules,url,allowed", [
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/b/c", True),
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/x", False),
    ("User-agent: *\nAllow: /p\nDisallow: /p\n", "/p", True),  # a tie: Allow wins
    ("User-agent: *\nDisallow: /*.gif$\n", "/x.gif", False),
    ("User-agent: *\nDisallow: /*.gif$\n", "/x.gif?y", True),
    ("User-agent: *\nDisallow: /\n\nUser-agent: Quaero\nAllow: /\n", "/any", True),  # our group, case-insensitive
    ("User-agent: quaero\nUser-agent: other\nDisallow: /both\n", "/both/x", False),  # a group of two agents
    ("Disallow: /orphan\nUser-agent: *\nDisallow:\n", "/orphan", True),  # a rule outside any group
    ("User-agent: *\nDisallow: /caf%C3%A9\n", "/caf%C3%A9/menu", False),
    ("User-agent: *\nDisallow: /café\n", "/caf%C3%A9", False),  # patterns are percent-encoded like URLs
    ("User-agent: *\nDisallow: /\n", "/robots.txt", True),
])
def test_robots_rules_follow_rfc_9309(rules: str, url: str, allowed: bool) -> None:
    assert RobotsRules.parse(rules, "quaero/0.1").allows("http://a.test" + url) is allowed


def test_robots_matching_is_linear_whatever_the_patterns() -> None:
    rules = RobotsRules.parse("User-agent: *\n" + "Disallow: /*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b\n" * 50, "q")
    assert rules.allows("http://a.test/" + "a" * 20000)
