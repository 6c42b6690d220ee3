"""Who is signed in: server-side sessions named by a random id in a signed, HttpOnly, SameSite=Strict
cookie. The cookie carries no token and no state, only the id; a session ends after an idle timeout, at
sign-out, or when the console restarts (the signing key lives in memory). Each session has its own CSRF
token. Failed sign-ins are limited per client address."""
from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from itsdangerous import BadSignature, Signer

COOKIE_NAME = "quaero_console"
MAX_SESSIONS = 2000  # anonymous visitors get one too (for the login form's CSRF token): bounded
FAILED_LOGINS_ALLOWED = 10
FAILED_LOGIN_WINDOW = 300.0


@dataclass
class Session:
    id: str
    csrf: str
    signed_in: bool
    last_seen: float


@dataclass
class Sessions:
    idle_seconds: float
    clock: Callable[[], float] = time.monotonic
    _signer: Signer = field(default_factory=lambda: Signer(secrets.token_bytes(32), salt="quaero-console-session"))
    _sessions: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def new(self, signed_in: bool = False) -> Session:
        session = Session(secrets.token_urlsafe(24), secrets.token_urlsafe(24), signed_in, self.clock())
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)  # the least recently seen
        return session

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (seen now), or None: unsigned, unknown or idle too long."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.idle_seconds:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def sign_in(self, old: Session) -> Session:
        """A new session (new id, new CSRF token) in place of the anonymous one: an id planted before
        the sign-in is worth nothing after it."""
        self.end(old)
        return self.new(signed_in=True)

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def cookie_value(self, session: Session) -> str:
        return self._signer.sign(session.id).decode()

    @staticmethod
    def csrf_matches(session: Session, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(session.csrf.encode(), (offered or "").encode())


@dataclass
class LoginLimiter:
    """At most FAILED_LOGINS_ALLOWED failed sign-ins per client address in FAILED_LOGIN_WINDOW seconds."""
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def wait_seconds(self, client: str) -> float:
        """0 when the client may try; else how long until it may."""
        failures = self._recent(client)
        if len(failures) < FAILED_LOGINS_ALLOWED:
            return 0.0
        return max(0.0, failures[0] + FAILED_LOGIN_WINDOW - self.clock())

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > MAX_SESSIONS:
            self._failures.pop(next(iter(self._failures)))

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < self.clock() - FAILED_LOGIN_WINDOW:
            failures.popleft()
        return failures
