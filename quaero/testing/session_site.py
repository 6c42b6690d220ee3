"""A site whose session changes while you browse it, as many do (tests and benchmarks).

Pages /p/0 … /p/N-1, each linking on to `fanout` more; signed in by the cookie `sid`:
- "slide": every signed-in answer re-sets the same value with a short lifetime (express-session
  `rolling`, ASP.NET sliding expiration); a value not seen for that long is over on the site's side too.
- "rotate": every signed-in answer issues a new value, and the one it was sent stops working at once
  (session-fixation defences, rotating refresh cookies).
- "fixed": the session never changes and nothing is set (the baseline).
A request that is not signed in is sent to /login (a redirect), as most sites do."""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .site import Request, Response, SiteServer, html

COOKIE = "sid"


@dataclass
class SessionSite:
    mode: str  # "slide", "rotate" or "fixed"
    pages: int = 8
    lifetime: int = 2  # seconds a sliding session lives after its last answer
    fanout: int = 1
    host: str = "127.0.0.1"
    signed_in: int = 0  # answers given to a signed-in request
    refused: int = 0  # requests sent to /login
    _valid: dict[str, float] = field(default_factory=dict)  # value -> when it stops working (monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: SiteServer | None = None

    def start(self) -> SessionSite:
        self.server = SiteServer(self.handle, host=self.host).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def sign_in(self) -> str:
        """A new signed-in session's value (what a person's browser would hold after logging in)."""
        value = secrets.token_urlsafe(12)
        with self._lock:
            self._valid[value] = time.monotonic() + (self.lifetime if self.mode == "slide" else 3600)
        return value

    def handle(self, request: Request) -> Response:
        if request.path == "/login":
            return html("Log in", body="Please sign in")
        if not request.path.startswith("/p/"):
            return Response(status=404, body="<html><title>missing</title></html>")
        number = int(request.path.rsplit("/", 1)[1])
        value = _cookie(request.cookie, COOKIE)
        headers: list[tuple[str, str]] = []
        with self._lock:
            now = time.monotonic()
            if value is None or self._valid.get(value, 0.0) <= now:
                self.refused += 1
                return Response(status=302, headers=[("Location", "/login")])
            self.signed_in += 1
            if self.mode == "slide":
                self._valid[value] = now + self.lifetime
                headers.append(("Set-Cookie", f"{COOKIE}={value}; Path=/; Max-Age={self.lifetime}; HttpOnly"))
            elif self.mode == "rotate":
                del self._valid[value]
                fresh = secrets.token_urlsafe(12)
                self._valid[fresh] = now + 3600
                headers.append(("Set-Cookie", f"{COOKIE}={fresh}; Path=/; Max-Age=3600; HttpOnly"))
        links = [f"/p/{k}" for k in range(number * self.fanout + 1, number * self.fanout + self.fanout + 1)
                 if k < self.pages]
        page: Any = html(f"Page {number}", *links, body=f"Members only: page {number}")
        page.headers = headers
        return page  # type: ignore[no-any-return]


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
