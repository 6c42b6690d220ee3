"""The gate: the only way out of the browser for one rendered page. A forward proxy on a loopback port
of its own, given to that page's browser context (Playwright's per-context `proxy=`), which sees every
request the page makes (the document, each redirect hop, scripts, fetch/XHR, images, iframes) and
applies the HTTP path's policy to each one:

- the network policy on the resolved address, through the crawl's own transport (transport.py), so
  loopback, private and link-local addresses, DNS rebinding included, are refused as on the HTTP path;
- logout URLs are never requested; a request that may be a navigation (it asks for HTML) is GET or HEAD
  only and obeys robots.txt;
- cookies: Chromium's jar holds the child's cookies, mapped exactly (browser.py), and decides where
  they go; on plain HTTP the gate also removes any stored credential the child's RFC 6265 jar would
  not send to that URL, so a credential reaches no host the HTTP path would not send it to even if
  the browser's rules differed;
- bounds: a response is read (and decompressed) here within MAX_BODY_BYTES, each request within the
  run's request_timeout_seconds, a page makes at most MAX_REQUESTS requests and takes at most
  MAX_PAGE_BYTES through the gate.

HTTPS goes through CONNECT: the gate checks the host and its resolved address and connects the tunnel
itself, then passes the encrypted bytes (bounded in time and size) without seeing paths or cookies.
Those stay with Chromium's jar and its certificate checks. Every refusal is kept (refusals) with the
verdict the HTTP path would have given, so the renderer can end a page whose navigation was refused
with that verdict.

Knows nothing of gRPC or Playwright.
"""
from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx

from quaero.errors import Reason
from quaero.urls import is_logout_link

from ..crawl.content import MAX_BODY_BYTES, BadContentEncoding, BodyTooLarge
from ..crawl.control import SLICE_SECONDS, Control, FetchAborted
from ..crawl.cookie_jar import CookieJar
from ..crawl.fetcher import Fetcher, FetchPolicy, verdict_for
from ..crawl.transport import GuardedTransport
from ..crawl.verdicts import FetchFailed, Verdict

log = logging.getLogger("quaero.executor.gate")
MAX_REQUESTS = 300  # per page: scripts, fetches, images, frames, hops
MAX_PAGE_BYTES = 64 * 1024 * 1024  # per page, through the gate (responses and tunnels)
MAX_REQUEST_BODY = 1024 * 1024  # a fetch()/form body the page sends
MAX_HEADER_BYTES = 64 * 1024
MAX_REFUSALS = 50  # kept per page
REFUSED_HEADER = "x-quaero-refused"  # on the gate's own answers, naming the verdict's reason
# Hop-by-hop headers (RFC 9110 §7.6.1) and what the gate decides itself.
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                            "transfer-encoding", "upgrade", "host", "accept-encoding", "content-length"})
_NOT_RETURNED = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
                           "transfer-encoding", "upgrade", "content-encoding", "content-length"})


@dataclass(frozen=True)
class Refusal:
    url: str  # for a tunnel, https://host:port
    verdict: Verdict
    navigation: bool  # it asked for HTML (a document or a frame) or was a tunnel


class Gate:
    """One page's gate. close() ends every request and tunnel in progress within SLICE_SECONDS."""

    def __init__(self, fetcher: Fetcher, jar: CookieJar, credentials: frozenset[str], policy: FetchPolicy) -> None:
        self._fetcher = fetcher
        self._jar = jar
        self._jar_lock = threading.Lock()
        self._credentials = credentials  # names of the stored cookies the child was given
        self._policy = policy
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.refusals: list[Refusal] = []
        self.requests = 0
        self.bytes = 0
        self.cookies_removed = 0
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(SLICE_SECONDS)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)
        self._listener.close()

    def refusal_for(self, url: str) -> Refusal | None:
        """The refusal of `url` (or of its host's tunnel, for https), if the gate refused it."""
        parts = urlsplit(url)
        tunnel = f"https://{parts.hostname}:{parts.port or 443}" if parts.scheme == "https" else None
        with self._lock:
            for refusal in reversed(self.refusals):
                if refusal.url == url or refusal.url == tunnel:
                    return refusal
        return None

    # ---- connections ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.add(sock)
            threading.Thread(target=self._serve, args=(sock,), name="gate-conn", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while not self._stopped.is_set():
                request = self._next(connection, sock)
                if not isinstance(request, h11.Request):
                    return
                body = self._request_body(connection, sock)
                if body is None:
                    self._answer_refusal(connection, sock, 413, "request body too large")
                    return
                if request.method == b"CONNECT":
                    self._tunnel(connection, sock, request.target.decode("ascii", "replace"))
                    return
                self._forward(connection, sock, request, body)
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (OSError, h11.ProtocolError, FetchAborted):
            pass  # the browser went away, sent something broken, or the page ended
        finally:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _next(self, connection: h11.Connection, sock: socket.socket) -> Any:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(self._recv(sock))

    def _recv(self, sock: socket.socket) -> bytes:
        sock.settimeout(SLICE_SECONDS)
        while True:
            if self._stopped.is_set():
                raise FetchAborted("the page ended")
            try:
                return sock.recv(65536)
            except TimeoutError:
                continue

    def _request_body(self, connection: h11.Connection, sock: socket.socket) -> bytes | None:
        body = bytearray()
        while True:
            event = self._next(connection, sock)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise h11.RemoteProtocolError("unexpected event in a request body")

    # ---- policy --------------------------------------------------------------------------------------
    def _refuse(self, url: str, verdict: Verdict, navigation: bool) -> None:
        with self._lock:
            if len(self.refusals) < MAX_REFUSALS:
                self.refusals.append(Refusal(url, verdict, navigation))
        log.debug("event=render_request_refused reason=%s navigation=%s", verdict.reason, navigation)

    def _count(self, url: str, navigation: bool) -> Verdict | None:
        with self._lock:
            self.requests += 1
            over = self.requests > MAX_REQUESTS
        if over:
            return FetchFailed(Reason.RENDER_TOO_LARGE, f"the page made more than {MAX_REQUESTS} requests")
        return None

    def _check(self, method: str, url: str, navigation: bool, control: Control) -> Verdict | None:
        """The HTTP path's rules for one plain-HTTP request the page makes."""
        if is_logout_link(url):
            return FetchFailed(Reason.LOGOUT_REDIRECT, f"{url[:200]} is a logout URL; not requested")
        if navigation and method not in ("GET", "HEAD"):
            return FetchFailed(Reason.NON_GET_NAVIGATION, f"the page sent a {method} navigation to {url[:200]} "
                               "(a form submission): only GET is followed")
        if navigation and self._policy.obey_robots:
            try:
                if not self._fetcher.robots_allows(url, self._policy, control):
                    return FetchFailed(Reason.ROBOTS_DISALLOWED, f"robots.txt disallows {url[:200]}")
            except Verdict as verdict:
                return verdict
            except httpx.TransportError as error:
                return verdict_for(error, urlsplit(url).netloc, self._policy)
        return None

    def _cookie_header(self, url: str, header: str) -> str:
        """The browser's Cookie header without any stored credential the child's jar would not send here."""
        if not self._credentials:
            return header
        with self._jar_lock:
            allowed = {(cookie.name, cookie.value) for cookie in self._jar.cookies_for(url)}
        kept = []
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name in self._credentials and (name, value) not in allowed:
                self.cookies_removed += 1
                continue
            kept.append(pair.strip())
        return "; ".join(kept)

    # ---- plain HTTP ----------------------------------------------------------------------------------
    def _forward(self, connection: h11.Connection, sock: socket.socket, request: h11.Request, body: bytes) -> None:
        method = request.method.decode("ascii", "replace")
        url = request.target.decode("ascii", "replace")
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in request.headers]
        accept = next((value for name, value in headers if name == "accept"), "")
        navigation = accept.startswith("text/html")  # documents and frames ask for HTML first
        if not url.startswith("http://"):
            self._answer_refusal(connection, sock, 400, "the gate forwards absolute http:// URLs only")
            return
        control = Control(cancelled=self._stopped)
        verdict = self._count(url, navigation) or self._check(method, url, navigation, control)
        if verdict is not None:
            self._refuse(url, verdict, navigation)
            self._answer_refusal(connection, sock, 403, str(verdict), verdict.reason)
            return
        forwarded: list[tuple[str, str]] = []
        for name, value in headers:
            if name in _NOT_FORWARDED or name.startswith("proxy-"):
                continue
            if name == "cookie":
                value = self._cookie_header(url, value)
                if not value:
                    continue
            forwarded.append((name, value))
        forwarded.append(("accept-encoding", "gzip, deflate"))  # decompressed here, within the cap
        policy = self._policy
        timeout = {"connect": policy.timeout, "read": policy.timeout, "write": policy.timeout, "pool": policy.timeout}
        outgoing = httpx.Request(method, url, headers=forwarded, content=body,
                                 extensions={"timeout": timeout, "network_policy": policy.network})
        verdict = None
        try:
            with control.request(policy.timeout), self._fetcher._send(outgoing) as response:
                with self._jar_lock:
                    self._fetcher._absorb(url, response, self._jar, [])
                content = bytes(self._fetcher._body(response, self._room()))
                status = response.status_code
                returned = [(name, value) for name, value in response.headers.multi_items()
                            if name.lower() not in _NOT_RETURNED]
        except (BodyTooLarge, BadContentEncoding) as error:
            reason = Reason.BODY_TOO_LARGE if isinstance(error, BodyTooLarge) else Reason.BAD_CONTENT_ENCODING
            verdict = FetchFailed(reason, f"{url[:200]}: {error}")
        except FetchAborted:
            raise
        except httpx.TransportError as error:
            verdict = verdict_for(error, urlsplit(url).netloc, policy)
        if verdict is not None:
            self._refuse(url, verdict, navigation)
            self._answer_refusal(connection, sock, 502, str(verdict), verdict.reason)
            return
        with self._lock:
            self.bytes += len(content)
        returned.append(("content-length", str(len(content))))
        self._send(sock, connection.send(h11.Response(status_code=status, headers=returned, reason=b"")))
        if content and method != "HEAD":
            self._send(sock, connection.send(h11.Data(data=content)))
        self._send(sock, connection.send(h11.EndOfMessage()))

    def _room(self) -> int:
        with self._lock:
            return max(0, min(MAX_BODY_BYTES, MAX_PAGE_BYTES - self.bytes))

    def _answer_refusal(self, connection: h11.Connection, sock: socket.socket, status: int, message: str,
                        reason: str = "") -> None:
        body = f"refused by quaero: {message}\n".encode("utf-8", "replace")
        headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body))),
                   ("cache-control", "no-store")]
        if reason:
            headers.append((REFUSED_HEADER, reason))
        if connection.our_state is not h11.SEND_RESPONSE:
            return
        self._send(sock, connection.send(h11.Response(status_code=status, headers=headers)))
        self._send(sock, connection.send(h11.Data(data=body)))
        self._send(sock, connection.send(h11.EndOfMessage()))

    @staticmethod
    def _send(sock: socket.socket, data: bytes | None) -> None:
        if data:
            sock.settimeout(30)
            sock.sendall(data)

    # ---- HTTPS: CONNECT ------------------------------------------------------------------------------
    def _tunnel(self, connection: h11.Connection, sock: socket.socket, authority: str) -> None:
        host, _, port_text = authority.rpartition(":")
        host = host.strip("[]").lower()
        label = f"https://{host}:{port_text}"
        verdict = self._count(label, True)
        if verdict is None and (not host or not port_text.isdigit() or not 0 < int(port_text) < 65536):
            verdict = FetchFailed(Reason.BAD_REDIRECT, f"the browser asked for a tunnel to {authority[:100]!r}")
        upstream: socket.socket | None = None
        if verdict is None:
            control = Control(cancelled=self._stopped)
            try:
                with control.request(self._policy.timeout):
                    upstream = _transport(self._fetcher).connect(host, int(port_text), self._policy.network)
            except FetchAborted:
                raise
            except httpx.TransportError as error:
                verdict = verdict_for(error, authority, self._policy)
        if verdict is not None or upstream is None:
            verdict = verdict or FetchFailed(Reason.CONNECT_FAILED, f"cannot reach {authority}")
            self._refuse(label, verdict, True)
            self._answer_refusal(connection, sock, 403, str(verdict), verdict.reason)
            return
        try:
            self._send(sock, connection.send(h11.Response(status_code=200, headers=[], reason=b"Connection Established")))
            pending, _closed = connection.trailing_data
            if pending:
                upstream.sendall(pending)
            self._pipe(sock, upstream)
        finally:
            upstream.close()

    def _pipe(self, browser: socket.socket, site: socket.socket) -> None:
        """Bytes both ways until either side closes, the page ends, the page's byte budget is spent, or
        nothing moves for request_timeout_seconds."""
        peers = {browser.fileno(): site, site.fileno(): browser}
        poller = select.poll()
        for fd in peers:
            poller.register(fd, select.POLLIN)
        idle_since = time.monotonic()
        while not self._stopped.is_set():
            ready = poller.poll(int(SLICE_SECONDS * 1000))
            if not ready:
                if time.monotonic() - idle_since > self._policy.timeout:
                    return
                continue
            idle_since = time.monotonic()
            for fd, _events in ready:
                source = browser if fd == browser.fileno() else site
                data = source.recv(65536)
                if not data:
                    return
                with self._lock:
                    self.bytes += len(data)
                    over = self.bytes > MAX_PAGE_BYTES
                if over:
                    self._refuse(f"https://{site.getpeername()[0]}", FetchFailed(
                        Reason.RENDER_TOO_LARGE, f"the page took more than {MAX_PAGE_BYTES // 2**20} MiB"), False)
                    return
                peers[fd].settimeout(self._policy.timeout)
                peers[fd].sendall(data)


def _transport(fetcher: Fetcher) -> GuardedTransport:
    transport = fetcher.transport
    if not isinstance(transport, GuardedTransport):
        raise httpx.ConnectError("tunnels need the guarded transport")
    return transport
