"""What the page handlers share: the clients, the current page token, and turning a form's answer into
a redirect."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse

from quaero.client import AsyncClients

from ..feeds import Feeds

PAGE_SIZE = 50


def clients(request: Request) -> AsyncClients:
    found: AsyncClients = request.app.state.clients
    return found


def feeds(request: Request) -> Feeds:
    found: Feeds = request.app.state.feeds
    return found


def after_post(location: str) -> RedirectResponse:
    """303: the browser GETs the result, so a reload does not send the form again."""
    return RedirectResponse(location, 303)


def param(request: Request, name: str, limit: int = 200) -> str:
    """A query parameter, trimmed and bounded (a page never sends more)."""
    return request.query_params.get(name, "").strip()[:limit]


def form_text(request: Request, name: str, limit: int = 500) -> str:
    value = request.state.form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""
