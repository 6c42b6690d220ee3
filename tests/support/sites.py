"""Local sites the process tests crawl."""
from __future__ import annotations

import time
from typing import Any

from quaero.testing.harness import CrawlHarness, cookie
from quaero.testing.site import Request, Response, Routes, SiteServer, html
from quaero.testing.wiki_site import COOKIE as WIKI_COOKIE
from quaero.testing.wiki_site import WikiSite


def members_site(pages: int, session: str, delay: float) -> SiteServer:
    """`pages` pages on the IP literal 127.0.0.1 (/p/0 … /p/N-1), each linking on to the next two and
    answering after `delay` seconds; without the cookie `session=<session>` each redirects to /login."""
    def page(n: int) -> Any:
        def handle(request: Request) -> Response:
            if f"session={session}" not in request.cookie:
                return Response(status=302, headers=[("Location", "/login")])
            time.sleep(delay)
            return html(f"page {n}", *[f"/p/{k}" for k in (2 * n + 1, 2 * n + 2) if k < pages])
        return handle

    return SiteServer(Routes({("127.0.0.1", f"/p/{n}"): page(n) for n in range(pages)})).start()


def signed_in_to_wiki(harness: CrawlHarness, site: WikiSite, auth_id: str) -> str:
    """Stored credentials holding the wiki's session cookie (on its IP literal)."""
    return harness.credentials([cookie(WIKI_COOKIE, site.session, site.host)], auth_id, site=site.host)
