"""robots.txt rules per RFC 9309: groups by product token, `*` and `$` in paths, the longest matching
rule wins and Allow wins a tie. Matching is linear in the path whatever the patterns (a robots.txt is
input from the site like any page: urllib.robotparser has no wildcards and takes the first match, and
regex-based parsers can be made to backtrack). Knows nothing of HTTP.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from quaero.urls import normalise_url

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


# ---- the cache of robots.txt per origin ------------------------------------------------------------
ROBOTS_TTL_SECONDS = 3600.0  # robots.txt is read again after an hour, as crawlers commonly do
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # after 5xx/timeouts, before asking again
MAX_REDIRECTS = 5  # RFC 9309 §2.3.1.2
MAX_ORIGINS = 10_000


@dataclass
class RobotsAnswer:
    """What one request for robots.txt got: a status, a redirect target, the body (2xx only); or, when
    no full answer came (timeout, broken HTTP), unavailable=True."""
    status: int = 0
    location: str | None = None
    body: bytes = b""
    unavailable: bool = False


@dataclass
class _Entry:
    rules: RobotsRules | None  # None: unavailable (5xx, 429, no full answer) until retry_at
    fetched_at: float
    failures: int = 0
    retry_at: float = 0.0


class RobotsUnavailable(Exception):
    def __init__(self, origin: str, retry_after: float, first: bool) -> None:
        super().__init__(f"{origin}/robots.txt is unavailable (a server error or no full answer); by RFC 9309 "
                         "nothing may be fetched until it is read" if first else
                         f"{origin}/robots.txt could not be read lately; the page waits")
        self.retry_after = retry_after


class RobotsCache:
    """RFC 9309 verdicts per origin: 2xx is obeyed, 4xx allows everything, 5xx/429/no full answer means
    'not now' (RobotsUnavailable, with a growing backoff before robots.txt is asked again). `read` makes
    one cookie-less request (the fetcher's); the cache follows redirects itself."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def cached(self, url: str) -> bool | None:
        """The verdict from the cache alone (no request); None when not known yet."""
        parts = urlsplit(url)
        with self._lock:
            entry = self._entries.get(f"{parts.scheme}://{parts.netloc}")
        if entry is None or entry.rules is None or self._clock() - entry.fetched_at > ROBOTS_TTL_SECONDS:
            return None
        return entry.rules.allows(url)

    def allows(self, url: str, user_agent: str, read: Callable[[str], RobotsAnswer]) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = self._clock()
        with self._lock:
            entry = self._entries.get(origin)
        if entry is not None and entry.rules is None and now < entry.retry_at:
            raise RobotsUnavailable(origin, entry.retry_at - now, first=False)
        if entry is None or entry.rules is None or now - entry.fetched_at > ROBOTS_TTL_SECONDS:
            failures = entry.failures if entry is not None and entry.rules is None else 0
            entry = self._read(origin, user_agent, read, failures)
            with self._lock:
                self._entries[origin] = entry
                self._entries.move_to_end(origin)
                while len(self._entries) > MAX_ORIGINS:
                    self._entries.popitem(last=False)
            if entry.rules is None:
                raise RobotsUnavailable(origin, entry.retry_at - self._clock(), first=True)
        assert entry.rules is not None
        return entry.rules.allows(url)

    def _read(self, origin: str, user_agent: str, read: Callable[[str], RobotsAnswer], failures: int) -> _Entry:
        now = self._clock()
        target = origin + "/robots.txt"
        for _hop in range(MAX_REDIRECTS + 1):
            answer = read(target)
            if answer.unavailable or answer.status == 429 or answer.status >= 500:
                backoff = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                return _Entry(None, now, failures + 1, now + backoff)
            if answer.status in (301, 302, 303, 307, 308) and answer.location:
                following = normalise_url(answer.location, target)
                if following is None:
                    break
                target = following
                continue
            if 200 <= answer.status < 300:
                return _Entry(RobotsRules.parse(answer.body.decode("utf-8", errors="replace"), user_agent), now)
            break  # 4xx (and anything else): no rules apply
        return _Entry(RobotsRules.allow_everything(), now)
