"""A signed-in site whose pages change between crawls, as an intranet wiki does: for incremental recrawls.

Pages /w/0 … /w/N-1 form a tree (each links to the next two). Each page has a version; change() moves it,
add()/remove() change which pages exist (a removed page's parent no longer links to it). Validators:
"etag" (a strong ETag of the body; If-None-Match answers 304), "last_modified" (Last-Modified per page
version; If-Modified-Since answers 304), "both", or "none" (every request gets the whole body). It counts
the body bytes it sent and the 304s it answered."""
from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from .site import Request, Response, Routes, SiteServer

COOKIE = "wiki_session"
# A wiki's words: many, but not unbounded (as a language's are).
_WORDS = random.Random(1)
VOCABULARY = ["".join(_WORDS.choices("abcdefghijklmnopqrstuvwxyz", k=_WORDS.randint(3, 9))) for _ in range(5000)]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class WikiSite:
    def __init__(self, pages: int, validators: str = "etag", host: str = "127.0.0.1", padding: int = 2000,
                 render_seconds: float = 0.0, varied: bool = False) -> None:
        """`render_seconds`: how long a whole page takes to make (a wiki renders it); a 304 takes none.
        `varied`: the padding is words of a 5,000-word vocabulary, differing from page to page and version to
        version (text that does not compress away, for tests of storage sizes)."""
        self.varied = varied
        self.render_seconds = render_seconds
        self.validators = validators
        self.host = host
        self.session = "s-" + hashlib.sha256(str(id(self)).encode()).hexdigest()[:16]
        self.present = set(range(pages))
        self.versions = dict.fromkeys(range(pages), 0)
        self.padding = padding
        self.body_bytes = 0
        self.not_modified = 0
        self.requests = 0
        self.conditional = 0  # requests that carried a validator
        self._lock = threading.Lock()
        self.server = SiteServer(self._answer, host=host)

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, n: int) -> str:
        return f"http://{self.host}:{self.port}/w/{n}"

    def start(self) -> WikiSite:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def change(self, *pages: int) -> None:
        for n in pages:
            self.versions[n] += 1

    def add(self, *pages: int) -> None:
        for n in pages:
            self.present.add(n)
            self.versions.setdefault(n, 0)

    def remove(self, *pages: int) -> None:
        self.present.difference_update(pages)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"body_bytes": self.body_bytes, "not_modified": self.not_modified, "requests": self.requests,
                    "conditional": self.conditional}

    def reset_counters(self) -> None:
        with self._lock:
            self.body_bytes = self.not_modified = self.requests = self.conditional = 0

    def body(self, n: int) -> str:
        links = " ".join(f'<a href="/w/{k}">page {k}</a>' for k in (2 * n + 1, 2 * n + 2) if k in self.present)
        if self.varied:
            rng = random.Random(f"{n}-{self.versions[n]}")
            filler = " ".join(rng.choices(VOCABULARY, k=self.padding // 7))
        else:
            filler = "lorem ipsum dolor sit amet " * (self.padding // 27)
        words = f"wiki page {n} version {self.versions[n]} " + filler
        return (f"<html><head><title>Wiki {n}</title></head><body><p>{words}</p>{links}</body></html>")

    def _answer(self, request: Request) -> Response:
        if request.path == "/robots.txt":
            return Routes({})(request)
        if request.path == "/__stats":  # (for a benchmark running the site in another process)
            return Response(body=json.dumps(self.stats()), content_type="application/json")
        with self._lock:
            self.requests += 1
        if f"{COOKIE}={self.session}" not in request.cookie:
            return Response(status=302, headers=[("Location", "/login")])
        if not request.path.startswith("/w/") or not request.path[3:].isdigit() or int(request.path[3:]) not in self.present:
            return Response(status=404, body="<html><title>missing</title></html>")
        n = int(request.path[3:])
        body = self.body(n).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        modified = EPOCH + timedelta(days=self.versions[n], seconds=n)
        headers: list[tuple[str, str]] = []
        if self.validators in ("etag", "both"):
            headers.append(("ETag", etag))
        if self.validators in ("last_modified", "both"):
            headers.append(("Last-Modified", format_datetime(modified, usegmt=True)))
        match = request.headers.get("if-none-match")
        since = request.headers.get("if-modified-since")
        if match or since:
            with self._lock:
                self.conditional += 1
        fresh = False
        if match is not None and self.validators in ("etag", "both"):
            fresh = etag in [tag.strip() for tag in match.split(",")]
        elif since is not None and self.validators in ("last_modified", "both"):
            try:
                fresh = modified <= parsedate_to_datetime(since)
            except (TypeError, ValueError):
                fresh = False
        if fresh:
            with self._lock:
                self.not_modified += 1
            return Response(status=304, headers=headers, content_type="")
        if self.render_seconds:
            time.sleep(self.render_seconds)
        with self._lock:
            self.body_bytes += len(body)
        return Response(body=body, headers=headers)
