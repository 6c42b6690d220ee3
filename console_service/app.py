"""The console application: its routes, the guard in front of them, the gRPC clients it lives on (made
in its event loop, closed with it), and errors from the services shown as pages that say what to do."""
from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from quaero.client import AsyncClients

from .config import ConsoleSettings
from .feeds import Feeds
from .guard import Guard
from .routes import credentials, definitions, documents, health, login, runs
from .sessions import LoginLimiter, Sessions
from .views import page

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# What the browser is told for a service's answer: a client's mistake stays a 4xx, never a 500.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def routes() -> list[Route | Mount]:
    return [
        Route("/", lambda request: RedirectResponse("/runs", 303)),
        Route("/login", login.login_form, methods=["GET"]),
        Route("/login", login.login, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/runs", runs.runs_list),
        Route("/runs/{run_id}", runs.run_page),
        Route("/runs/{run_id}/children", runs.run_children),
        Route("/runs/{run_id}/events", runs.run_events),
        Route("/runs/{run_id}/documents", runs.run_documents),
        Route("/runs/{run_id}/cancel", runs.run_cancel, methods=["POST"]),
        Route("/definitions", definitions.definitions_list),
        Route("/definitions/{definition_id}", definitions.definition_page),
        Route("/definitions/{definition_id}/run", definitions.definition_run, methods=["POST"]),
        Route("/definitions/{definition_id}/pause", definitions.definition_pause, methods=["POST"]),
        Route("/definitions/{definition_id}/resume", definitions.definition_resume, methods=["POST"]),
        Route("/credentials", credentials.credentials_list, methods=["GET"]),
        Route("/credentials", credentials.credentials_import, methods=["POST"]),
        Route("/credentials/{auth_id}/delete", credentials.credentials_delete, methods=["POST"]),
        Route("/documents", documents.documents_search),
        Route("/documents/{document_id}", documents.document_page),
        Route("/health", health.health_page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def service_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, grpc.RpcError)
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    status = HTTP_STATUS.get(code, 502)
    title = {404: "Not found", 409: "Refused", 400: "Not accepted", 429: "Busy", 503: "A service is unreachable",
             504: "A service took too long"}.get(status, "The service failed")
    message = error.details() or code.name  # type: ignore[attr-defined]
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        message = ("the services refused the console's operator token: start the console with the token the "
                   "manager uses (QUAERO_API_TOKEN or the api-token file in its data directory)")
    return page(request, "error.html", status, title=title, message=f"{message} ({code.name})")


async def not_found(request: Request, error: Exception) -> Response:
    status = error.status_code if isinstance(error, HTTPException) else 404
    return page(request, "error.html", status, title="Not found" if status == 404 else "Not accepted",
                message=f"There is no page at {request.url.path}." if status == 404 else str(error))


async def unexpected(request: Request, error: Exception) -> Response:
    incident = secrets.token_hex(4)
    log.error("event=console_error incident=%s path=%s", incident, request.url.path, exc_info=error)
    return page(request, "error.html", 500, title="The console failed",
                message=f"Something unexpected went wrong (incident {incident}; the console's log has the details).")


def build_app(settings: ConsoleSettings, sessions: Sessions | None = None) -> Guard:
    """The ASGI application: the guard outermost, so that even a page for an unexpected error carries the
    security headers (Starlette's own error middleware sits outside any middleware it is given)."""
    sessions = sessions or Sessions(settings.idle_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # grpc.aio channels belong to the event loop that made them: this one.
        app.state.clients = AsyncClients.connect(settings.manager, settings.executor, settings.token,
                                                 tls_ca=settings.tls_ca)
        app.state.feeds = Feeds(app.state.clients)
        try:
            yield
        finally:
            await app.state.clients.close()

    app = Starlette(routes=routes(), lifespan=lifespan,
                    exception_handlers={grpc.RpcError: service_error, HTTPException: not_found,
                                        Exception: unexpected})
    app.state.settings, app.state.token = settings, settings.token
    app.state.sessions, app.state.login_limiter = sessions, LoginLimiter()
    return Guard(app, sessions, settings.secure_cookies)
