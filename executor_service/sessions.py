"""Run sessions on the executor side: a run has one cookie session, as a browser session does. A cookie
that any page's response sets is sent by the pages of the same run that start after it.

A page starts from the run's stored credentials with the session over them (`RunSession.cookies`). What
its responses set joins this executor's copy at once (`absorb`) and the manager's with the page's record
(CompleteLeasedJob.session_cookies); other executors receive the manager's copy with their next lease
(LeaseJobsResponse.sessions), so the session costs no call of its own. Where two responses set one
cookie, the later one wins.

Pages in flight at once: with concurrency > 1 a page may be sent with a value another page's response has
just replaced (a site that rotates its session on every response). A page that ends logged out although
the session changed for its URL while it was in flight was superseded, not logged out: it is fetched
again with the newest session. After SERIAL_AFTER such pages a host's pages of the run go one at a time
on this executor (`fetching`)."""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from quaero.cookies import StoredCookie, domain_matches, path_matches
from quaero.cookies.session import MAX_RUN_SESSION_COOKIES, Key, SessionCookie, key_of

MAX_RUNS = 256  # runs whose session this executor keeps (the least recently used go)
SERIAL_AFTER = 2  # superseded pages of a run and host before that host's pages go one at a time


@dataclass
class _Entry:
    item: SessionCookie
    generation: int  # the session's generation when it changed
    local: bool  # set by this executor's pages and not yet seen in a version from the manager


class RunSession:
    def __init__(self, parent_id: str) -> None:
        self.parent_id = parent_id
        self.version = 0  # the manager's version this copy has taken in
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._generation = 0
        self._superseded: dict[str, int] = {}  # host -> pages superseded
        self._serial: dict[str, threading.Lock] = {}  # hosts whose pages go one at a time
        self._in_flight: dict[str, set[int]] = {}  # host -> fetches under way
        self._fetch_ids = itertools.count()
        self._ended = threading.Condition(self._lock)

    # ---- what a page starts from ---------------------------------------------------------------
    def cookies(self, stored: list[StoredCookie]) -> tuple[list[StoredCookie], int]:
        """The cookies a page starts from (the credentials with the session over them) and the session's
        generation then (for `changed_since`)."""
        with self._lock:
            merged = {key_of(cookie): cookie for cookie in stored}
            for key, entry in self._entries.items():
                if entry.item.removed:
                    merged.pop(key, None)
                else:
                    merged[key] = entry.item.cookie
            return list(merged.values()), self._generation

    def changed_since(self, generation: int, url: str) -> bool:
        """Whether a cookie this URL would be sent changed after `generation`."""
        return self._changed_for(url, after=generation)

    def sets_cookies_for(self, url: str) -> bool:
        """Whether the site set this run's session a cookie this URL would be sent (it changes its session
        as the run goes)."""
        return self._changed_for(url, after=-1)

    def _changed_for(self, url: str, after: int) -> bool:
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path or "/"
        with self._lock:
            return any(entry.generation > after and domain_matches(host, entry.item.cookie)
                       and path_matches(path, entry.item.cookie.path) for entry in self._entries.values())

    # ---- what pages and the manager teach it -----------------------------------------------------
    def absorb(self, items: list[SessionCookie]) -> None:
        """Cookies this executor's page was just set (in arrival order). Past MAX_RUN_SESSION_COOKIES a new
        cookie is not kept, as the manager keeps none (a site cannot grow the session without bound)."""
        with self._lock:
            for item in items:
                current = self._entries.get(item.key)
                if current is not None and current.item.set_at > item.set_at:
                    continue
                if current is None and len(self._entries) >= MAX_RUN_SESSION_COOKIES:
                    continue
                self._generation += 1
                self._entries[item.key] = _Entry(item, self._generation, local=True)

    def update(self, version: int, items: list[SessionCookie]) -> None:
        """The manager's copy at `version` (the whole session): it replaces what this executor knew, but a
        cookie this executor set later than the manager's copy of it stays until the manager has it."""
        with self._lock:
            if version <= self.version:
                return
            self.version = version
            incoming = {item.key: item for item in items}
            for key, entry in list(self._entries.items()):
                if key not in incoming and not entry.local:
                    del self._entries[key]
                    self._generation += 1
            for key, item in incoming.items():
                current = self._entries.get(key)
                if current is not None and (current.item.set_at > item.set_at or current.item == item):
                    if current.item == item:
                        current.local = False
                    continue
                self._generation += 1
                self._entries[key] = _Entry(item, self._generation, local=False)

    # ---- pages in flight at once -------------------------------------------------------------------
    def superseded(self, url: str) -> None:
        """A page of `url` was sent a value another page's response replaced meanwhile."""
        host = _host(url)
        with self._lock:
            self._superseded[host] = self._superseded.get(host, 0) + 1
            if self._superseded[host] >= SERIAL_AFTER:
                self._serial.setdefault(host, threading.Lock())

    @contextlib.contextmanager
    def fetching(self, url: str) -> Iterator[None]:
        """Around a page's fetch: takes the host's turn when its pages go one at a time, and counts the
        fetch as in flight (for `settle`)."""
        host = _host(url)
        with self._lock:
            turn = self._serial.get(host)
        with turn or contextlib.nullcontext():
            with self._lock:
                fetch = next(self._fetch_ids)
                self._in_flight.setdefault(host, set()).add(fetch)
            try:
                yield
            finally:
                with self._ended:
                    self._in_flight[host].discard(fetch)
                    self._ended.notify_all()

    def settle(self, url: str, timeout: float) -> None:
        """Waits (at most `timeout`) until the fetches of the URL's host in flight now have ended, and so
        have given this session what their responses set."""
        host = _host(url)
        with self._ended:
            waiting = set(self._in_flight.get(host, ()))
            self._ended.wait_for(lambda: not waiting & self._in_flight.get(host, set()), timeout)


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class RunSessions:
    """The sessions of the runs this executor works on, by parent job id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, RunSession] = OrderedDict()

    def get(self, parent_id: str) -> RunSession:
        with self._lock:
            session = self._runs.get(parent_id)
            if session is None:
                session = self._runs[parent_id] = RunSession(parent_id)
                while len(self._runs) > MAX_RUNS:
                    self._runs.popitem(last=False)
            self._runs.move_to_end(parent_id)
            return session

    def known(self) -> dict[str, int]:
        """parent id -> the manager's version held (for LeaseJobsRequest.known_sessions)."""
        with self._lock:
            return {parent_id: session.version for parent_id, session in self._runs.items() if session.version}

    def update(self, parent_id: str, version: int, items: list[SessionCookie]) -> None:
        self.get(parent_id).update(version, items)
