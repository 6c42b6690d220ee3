"""A single-page app for the browser tests and the render benchmark: every page is the same HTML shell,
whose script asks an authenticated JSON API for the page's title, text and links and builds them, and
touches an off-site host (an image, a frame and a fetch) that must never get the app's cookies."""
from __future__ import annotations

import json
from typing import Any

from quaero.testing.site import Request, Response, SiteServer

APP = "app.site.test"
OFF_SITE = "offsite.example.test"  # in tests/support/hosts.RESOLVE
SESSION = "sid"


def shell(title: str = "loading") -> Response:
    return Response(body=f"<!doctype html><html><head><title>{title}</title></head><body><div id=app>loading</div>"
                         "<script src=/app.js></script></body></html>")


APP_JS = """
const n = location.pathname.split('/').pop() || '0';
fetch('/api/page/' + n, {credentials: 'include'}).then(r => r.ok ? r.json() : {title: 'denied ' + r.status,
    text: 'no session', links: []}).then(p => {
  document.title = p.title;
  const root = document.getElementById('app');
  root.innerHTML = '<h1>' + p.title + '</h1><p>' + p.text + '</p>' +
      p.links.map(l => '<a href="' + l + '">' + l + '</a>').join(' ');
  if (p.off) {
    const img = document.createElement('img'); img.src = p.off + '/pixel.gif'; root.appendChild(img);
    const frame = document.createElement('iframe'); frame.src = p.off + '/frame'; root.appendChild(frame);
    fetch(p.off + '/api', {credentials: 'include', mode: 'no-cors'});
  }
});
"""


class SpaApp:
    """Routes for an app of `pages` pages (page n links to 2n+1 and 2n+2) on APP, behind the cookie
    SESSION=`session`; `off_site` is the off-site origin its pages touch ('' for none)."""

    def __init__(self, pages: int, session: str, off_site: str = "") -> None:
        self.pages = pages
        self.session = session
        self.off_site = off_site

    def __call__(self, request: Request) -> Response:
        if request.host == OFF_SITE:
            return Response(body="<p>elsewhere</p>") if request.path == "/frame" else Response(
                body=b"GIF89a", content_type="image/gif")
        if request.path == "/app.js":
            return Response(body=APP_JS, content_type="application/javascript")
        if request.path.startswith("/api/page/"):
            if f"{SESSION}={self.session}" not in request.cookie:
                return Response(status=401, body="{}", content_type="application/json")
            return self._api(int(request.path.rsplit("/", 1)[1] or 0))
        if request.path == "/" or request.path.startswith("/p/"):
            return shell()
        return Response(status=404, body="not found")

    def _api(self, n: int) -> Response:
        links = [f"/p/{child}" for child in (2 * n + 1, 2 * n + 2) if child < self.pages]
        data: dict[str, Any] = {"title": f"Page {n}", "text": f"secret content of page {n}", "links": links}
        if self.off_site:
            data["off"] = self.off_site
        return Response(body=json.dumps(data), content_type="application/json")


def serve_app(pages: int, session: str, with_off_site: bool = True) -> tuple[SiteServer, SpaApp]:
    app = SpaApp(pages, session)
    site = SiteServer(app).start()
    if with_off_site:
        app.off_site = f"http://{OFF_SITE}:{site.port}"
    return site, app
