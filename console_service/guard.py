"""What every response passes through: the session (made on first visit, required for every page but the
login page and static files), the security headers (a strict Content-Security-Policy with no inline
script, no framing, no caching of pages) and, for a state-changing request, a same-origin check. The CSRF
token itself is checked by each state-changing handler (`state_changing`), which reads the form."""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .sessions import COOKIE_NAME, Session, Sessions

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # never a console URL to a crawled site (and a real Origin on forms)
    "cross-origin-opener-policy": "same-origin",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 2 * 1024 * 1024  # a cookie export is the largest thing a form sends


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


def replace_session(request: Request, session: Session | None) -> None:
    """Sign-in and sign-out: the response sets (or clears) the cookie for this session."""
    request.state.session = session
    request.state.cookie_changed = True


class Guard:
    def __init__(self, app: ASGIApp, sessions: Sessions, secure_cookies: bool) -> None:
        self.app, self.sessions, self.secure = app, sessions, secure_cookies

    @property
    def state(self) -> Any:
        """The application's state (clients, feeds, settings)."""
        return self.app.state  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        static = path.startswith("/static/")
        state = scope.setdefault("state", {})
        request = Request(scope)
        if not static:
            session = self.sessions.find(request.cookies.get(COOKIE_NAME))
            state["cookie_changed"] = session is None
            state["session"] = session or self.sessions.new()

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
                if state.get("cookie_changed"):
                    headers.append("set-cookie", self._cookie(state.get("session")))
            await send(message)

        if not static:
            refusal = self._refusal(request, state["session"])
            if refusal is not None:
                await refusal(scope, receive, send_guarded)
                return
        await self.app(scope, receive, send_guarded)

    def _refusal(self, request: Request, session: Session) -> Response | None:
        if request.method not in SAFE_METHODS and not same_origin(request):
            return PlainTextResponse("refused: this request came from another site (its Origin is not the "
                                     "console's)", 403)
        if session.signed_in or request.url.path == "/login":
            return None
        if request.method in SAFE_METHODS and "hx-request" not in request.headers \
                and "text/event-stream" not in request.headers.get("accept", ""):
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(wanted, safe='')}", 303)
        # htmx and the live stream: a redirect would be swapped into the page; tell htmx to go there instead.
        return PlainTextResponse("sign in first: the session ended or was never started", 401,
                                 headers={"hx-redirect": "/login"})

    def _cookie(self, session: Session | None) -> str:
        flags = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if self.secure else "")
        if session is None:
            return f"{COOKIE_NAME}=; Max-Age=0" + flags
        return f"{COOKIE_NAME}={self.sessions.cookie_value(session)}" + flags


def same_origin(request: Request) -> bool:
    """No Origin (an old browser, a script) passes to the CSRF check; one that names another site fails."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme == request.url.scheme


Handler = Callable[[Request], Awaitable[Response]]


def state_changing(handler: Handler) -> Handler:
    """Every handler that changes something: the form's CSRF token must be this session's."""
    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        form = await request.form(max_files=1, max_fields=50, max_part_size=MAX_FORM_BYTES)
        offered: Any = form.get("csrf") or request.headers.get("x-csrf-token")
        if not Sessions.csrf_matches(session_of(request), offered if isinstance(offered, str) else None):
            return PlainTextResponse("refused: the form's CSRF token is missing or stale; reload the page and "
                                     "try again", 403)
        request.state.form = form
        return await handler(request)

    checked.state_changing = True  # type: ignore[attr-defined]
    return checked
