"""Signing in with the operator token, and out."""
from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from ..guard import replace_session, session_of, state_changing
from ..views import page
from .common import after_post, form_text, param


def _next(target: str) -> str:
    """Only a path of this console (never //host or a scheme: no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/runs"


async def login_form(request: Request) -> Response:
    if session_of(request).signed_in:
        return after_post(_next(param(request, "next", 2000)))
    return page(request, "login.html", next=_next(param(request, "next", 2000)), problem="")


@state_changing
async def login(request: Request) -> Response:
    limiter, client = request.app.state.login_limiter, request.client.host if request.client else "?"
    target = _next(form_text(request, "next", 2000))
    wait = limiter.wait_seconds(client)
    if wait:
        return page(request, "login.html", 429, next=target,
                    problem=f"Too many failed sign-ins from this address; try again in {int(wait) + 1} s.")
    offered = form_text(request, "token", 1000).encode()
    if not hmac.compare_digest(offered, request.app.state.token.encode()):
        limiter.failed(client)
        return page(request, "login.html", 401, next=target,
                    problem="That is not the operator token (QUAERO_API_TOKEN, or the api-token file in the "
                            "manager's data directory).")
    replace_session(request, request.app.state.sessions.sign_in(session_of(request)))
    return after_post(target)


@state_changing
async def logout(request: Request) -> Response:
    request.app.state.sessions.end(session_of(request))
    replace_session(request, None)
    return after_post("/login")
