"""The bundled demo site: login-protected pages that link to each other, one off-site link to a
second host, a logout link, and robots.txt. Only a request with the session cookie sees a page."""
from __future__ import annotations

import secrets

from ..testing.site import Request, Response, SiteServer

SITE_HOST = "demo.quaero.test"
OFFSITE_HOST = "offsite.example.test"
SIGNED_IN = "Signed in as demo-user"


class DemoSite:
    def __init__(self, pages: int = 8) -> None:
        self.pages = pages
        self.session = secrets.token_urlsafe(24)
        self.server = SiteServer(self.handle)

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str = "/", host: str = SITE_HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def handle(self, request: Request) -> Response:
        if request.host == OFFSITE_HOST:
            return Response(body="<html><title>Elsewhere</title><body>An unrelated site.</body></html>")
        if request.path == "/robots.txt":
            return Response(body="User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        if request.path == "/login":
            return Response(body="<html><title>Log in</title><body>Please log in.</body></html>")
        if request.path == "/logout":
            return Response(status=302, headers=[("Location", "/login"), ("Set-Cookie", "session=; Max-Age=0")])
        if f"session={self.session}" not in request.cookie:
            return Response(status=302, headers=[("Location", f"/login?next={request.path}")])
        if request.path == "/":
            return self._page("Home", 0)
        if request.path.startswith("/page/"):
            try:
                number = int(request.path.rsplit("/", 1)[1])
            except ValueError:
                return Response(status=404, body="not found")
            if 1 <= number <= self.pages:
                return self._page(f"Page {number}", number)
        return Response(status=404, body="<html><title>Not found</title></html>")

    def _page(self, title: str, number: int) -> Response:
        links = [f'<a href="/page/{n}">page {n}</a>' for n in (number + 1, number + 2) if 1 <= n <= self.pages]
        links.append('<a href="/logout">Log out</a>')
        if number == 0:
            links += [f'<a href="http://{OFFSITE_HOST}:{self.port}/">an off-site link</a>',
                      '<a href="/private/notes">private (robots.txt disallows it)</a>']
        body = (f"<html><head><title>{title}</title></head><body><p>{SIGNED_IN}</p>"
                f"<p>Members-only content of {title.lower()}.</p>{' '.join(links)}</body></html>")
        return Response(body=body)
