"""A small HTTP server that answers for several host names and records every request it gets: the
sites of the demo, the tests and the benchmarks (and of your own tests against Quaero)."""
from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Request:
    host: str
    path: str
    query: str
    headers: dict[str, str]
    scheme: str

    @property
    def cookie(self) -> str:
        return self.headers.get("cookie", "")

    def cookie_names(self) -> set[str]:
        return {part.split("=", 1)[0].strip() for part in self.cookie.split(";") if "=" in part}


@dataclass
class Response:
    status: int = 200
    body: str | bytes = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"
    # Writes the whole answer itself (status line included) on the raw socket, then the connection is
    # closed: for answers a well-behaved server would never send (tests of hostile sites).
    raw: Callable[[socket.socket], None] | None = None


Handler = Callable[[Request], Response]


class SiteServer:
    """handler(request) -> Response for every GET; requests are recorded in order."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        """Listens on a free port of `host` ("::1" for IPv6) as soon as it is made; start() serves."""
        self.handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        site = self
        scheme = "https" if tls else "http"

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One send per answer, as a real server does: headers and body written apart, with Nagle's
            # algorithm on, met the client's delayed ACK and held every keep-alive answer 40 ms (44 ms a
            # request, measured: every crawler and test was timing that).
            wbufsize = -1  # (handle_one_request flushes after each request)
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
                request = Request(host, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()},
                                  scheme)
                with site._lock:
                    site.requests.append(request)
                response = site.handler(request)
                if response.raw is not None:
                    self.close_connection = True
                    try:
                        response.raw(self.connection)
                    except OSError:
                        pass  # the client gave up: that is often the point
                    return
                body = response.body.encode() if isinstance(response.body, str) else response.body
                self.send_response(response.status)
                if response.content_type:
                    self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in response.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests read self.requests instead

        class _Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up (a crawler giving up on an answer) is not an error here

        self.host = host
        self.httpd = _Server((host, 0), _Handler)
        self.httpd.daemon_threads = True
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        # A short poll interval: stop() returns within 50 ms (tests stop many sites).
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> SiteServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SiteServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_to(self, host: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.host == host]


def html(title: str, *links: str, body: str = "") -> Response:
    """A small page with a title, a paragraph and links."""
    anchors = " ".join(f'<a href="{link}">{link}</a>' for link in links)
    return Response(body=f"<html><head><title>{title}</title></head><body><p>{body or title}</p>{anchors}</body></html>")


class Routes:
    """A site keyed by (host, path) (host "*" for any); unknown paths are 404, robots.txt allows
    everything by default. `routes` may be changed while the site runs."""

    def __init__(self, routes: dict[tuple[str, str], Handler | Response]) -> None:
        self.routes = routes

    def __call__(self, request: Request) -> Response:
        handler = self.routes.get((request.host, request.path)) or self.routes.get(("*", request.path))
        if handler is None:
            if request.path == "/robots.txt":
                return Response(body="User-agent: *\nAllow: /\n", content_type="text/plain")
            return Response(status=404, body="<html><title>missing</title></html>")
        return handler(request) if callable(handler) else handler
