"""robots.txt rules per RFC 9309: groups by product token, `*` and `$` in paths, the longest matching
rule wins and Allow wins a tie. Matching is linear in the path whatever the patterns (a robots.txt is
input from the site like any page: urllib.robotparser has no wildcards and takes the first match, and
regex-based parsers can be made to backtrack). Knows nothing of HTTP.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least 500 KiB; the rest is ignored
_SAFE = "/:@!$&'()*+,;=-._~%?"
_TOKEN = re.compile(r"[A-Za-z_-]+")


def product_token(user_agent: str) -> str:
    """'quaero/0.1 (+https://…)' -> 'quaero': what robots.txt groups are matched against."""
    found = _TOKEN.match(user_agent.strip())
    return found.group(0).lower() if found else "*"


@dataclass(frozen=True)
class Rule:
    allow: bool
    pattern: str  # percent-encoded, as URLs are
    segments: tuple[str, ...] = field(compare=False)
    anchored: bool = field(compare=False)

    @classmethod
    def of(cls, allow: bool, raw: str) -> Rule:
        pattern = quote(raw, safe=_SAFE + "*$")
        anchored = pattern.endswith("$")
        body = pattern[:-1] if anchored else pattern
        return cls(allow, pattern, tuple(body.split("*")), anchored)

    def matches(self, path: str) -> bool:
        """Greedy glob matching (only `*` and a final `$`): each segment at its leftmost place."""
        segments = self.segments
        if not path.startswith(segments[0]):
            return False
        position = len(segments[0])
        if len(segments) == 1:
            return position == len(path) if self.anchored else True
        for segment in segments[1:-1]:
            found = path.find(segment, position)
            if found < 0:
                return False
            position = found + len(segment)
        last = segments[-1]
        if self.anchored:
            return path.endswith(last) and len(path) - len(last) >= position
        return path.find(last, position) >= 0


@dataclass
class RobotsRules:
    rules: list[Rule] = field(default_factory=list)
    disallow_all: bool = False

    @classmethod
    def allow_everything(cls) -> RobotsRules:
        return cls()

    @classmethod
    def parse(cls, text: str, user_agent: str) -> RobotsRules:
        token = product_token(user_agent)
        ours: list[Rule] = []
        anyone: list[Rule] = []
        matched_ours = False
        agents: list[str] = []
        in_rules = False
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            key, colon, value = line.partition(":")
            if not colon:
                continue
            key, value = key.strip().lower(), value.strip()
            if key in ("user-agent", "useragent", "user agent"):
                if in_rules:
                    agents, in_rules = [], False
                agents.append(product_token(value) if value != "*" else "*")
                if agents[-1] == token:
                    matched_ours = True
            elif key in ("allow", "disallow"):
                if not agents:
                    continue  # a rule outside any group
                in_rules = True
                if not value:
                    continue  # "Disallow:" with nothing allows everything; no rule needed
                rule = Rule.of(key == "allow", value)
                if token in agents:
                    ours.append(rule)
                if "*" in agents:
                    anyone.append(rule)
        return cls(ours if matched_ours else anyone)

    def allows(self, url: str) -> bool:
        if self.disallow_all:
            return False
        parts = urlsplit(url)
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        if path == "/robots.txt":
            return True
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(path) and (best is None or len(rule.pattern) > len(best.pattern)
                                       or (len(rule.pattern) == len(best.pattern) and rule.allow)):
                best = rule
        return best is None or best.allow
