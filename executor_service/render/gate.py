"""The gate: the only way out of the browser for a rendered page. A forward proxy on a loopback port of
its own, given to one browser context (Playwright's per-context `proxy=`) and bound to the page that
context renders now, which sees every request the page makes (the document, each redirect hop,
scripts, fetch/XHR, images, iframes) and applies the HTTP path's policy to each one:

- the network policy on the resolved address, through the crawl's own transport (transport.py), so
  loopback, private and link-local addresses, DNS rebinding included, are refused as on the HTTP path;
- logout URLs are never requested; a request that may be a navigation (it asks for HTML) is GET or HEAD
  only and obeys robots.txt;
- cookies: Chromium's jar holds the child's cookies, mapped exactly (browser.py), and decides where
  they go; the gate also removes any stored credential the child's RFC 6265 jar would not send to that
  URL, so a credential reaches no host the HTTP path would not send it to even if the browser's rules
  differed;
- bounds: a response is read (and decompressed) here within MAX_BODY_BYTES, each request within the
  run's request_timeout_seconds, a page makes at most MAX_REQUESTS requests and takes at most
  MAX_PAGE_BYTES through the gate.

HTTPS goes through CONNECT, and the gate ends the browser's TLS itself (with a certificate of its own that
only these contexts accept) and serves the requests inside like plain ones: it is the site's TLS client
and checks the site's certificate as the HTTP path does (system roots and QUAERO_CA_BUNDLE). So every
rule above holds for https too, redirect hops and script navigations included. WebSockets are not
forwarded. Every refusal is kept (refusals) with the verdict the HTTP path would have given, so the
renderer can end a page whose navigation was refused with that verdict.

Knows nothing of gRPC or Playwright.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quaero.errors import Reason
from quaero.urls import is_logout_link

from ..crawl.content import MAX_BODY_BYTES, BadContentEncoding, BodyTooLarge
from ..crawl.control import SLICE_SECONDS, Control, FetchAborted
from ..crawl.cookie_jar import CookieJar
from ..crawl.fetcher import Fetcher, FetchPolicy, request_extensions, verdict_for
from ..crawl.verdicts import FetchFailed, Verdict

log = logging.getLogger("quaero.executor.gate")
MAX_REQUESTS = 300  # per page: scripts, fetches, images, frames, hops
MAX_PAGE_BYTES = 64 * 1024 * 1024  # per page, through the gate (responses and tunnels)
MAX_REQUEST_BODY = 1024 * 1024  # a fetch()/form body the page sends
MAX_HEADER_BYTES = 64 * 1024
MAX_REFUSALS = 50  # kept per page
MAX_READING = 6  # responses read at once per page: at most 6 x MAX_BODY_BYTES held
REFUSED_HEADER = "x-quaero-refused"  # on the gate's own answers, naming the verdict's reason
# Hop-by-hop headers (RFC 9110 §7.6.1) and what the gate decides itself.
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                            "transfer-encoding", "upgrade", "host", "accept-encoding", "content-length"})
_NOT_RETURNED = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
                           "transfer-encoding", "upgrade", "content-encoding", "content-length"})


@dataclass(frozen=True)
class Refusal:
    url: str
    verdict: Verdict


def request_refusal(fetcher: Fetcher, method: str, url: str, navigation: bool, policy: FetchPolicy,
                    control: Control) -> Verdict | None:
    """The HTTP path's rules for one request a page makes (None: it may go): logout URLs never, and a
    navigation (a request that asks for HTML) only as GET or HEAD and where robots.txt allows it."""
    if is_logout_link(url):
        return FetchFailed(Reason.LOGOUT_REDIRECT, f"{url[:200]} is a logout URL; not requested")
    if navigation and method not in ("GET", "HEAD"):
        return FetchFailed(Reason.NON_GET_NAVIGATION, f"the page sent a {method} navigation to {url[:200]} "
                           "(a form submission): only GET is followed")
    if navigation and policy.obey_robots:
        try:
            if not fetcher.robots_allows(url, policy, control):
                return FetchFailed(Reason.ROBOTS_DISALLOWED, f"robots.txt disallows {url[:200]}")
        except Verdict as verdict:
            return verdict
        except FetchAborted:
            raise
        except httpx.TransportError as error:
            return verdict_for(error, urlsplit(url).netloc, policy)
    return None


@dataclass
class PageState:
    """What the gate knows of the page it serves now: its child's jar, the names of its stored
    credentials, its policy; and what it did (requests, bytes, refusals)."""
    jar: CookieJar
    credentials: frozenset[str]
    policy: FetchPolicy
    over: threading.Event = field(default_factory=threading.Event)  # the page ended: stop its requests
    refusals: list[Refusal] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    cookies_removed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Responses read at once (each buffered here, up to MAX_BODY_BYTES): bounds a page's memory in the gate.
    reading: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(MAX_READING))

    @contextlib.contextmanager
    def reading_turn(self, control: Control) -> Iterator[None]:
        while not self.reading.acquire(timeout=SLICE_SECONDS):
            control.check()
        try:
            yield
        finally:
            self.reading.release()

    def refusal_for(self, url: str) -> Refusal | None:
        """The refusal of `url`, if the gate refused it."""
        with self.lock:
            return next((refusal for refusal in reversed(self.refusals) if refusal.url == url), None)


class Gate:
    """A browser context's gate, serving one page at a time (bind ... unbind). Unbinding ends every
    request and tunnel of that page within SLICE_SECONDS and closes its connections, so nothing of one
    page's traffic is served under the next page's policy; a connection arriving unbound is closed."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self._state: PageState | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(SLICE_SECONDS)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="gate", daemon=True)
        self._thread.start()

    def bind(self, jar: CookieJar, credentials: frozenset[str], policy: FetchPolicy) -> PageState:
        state = PageState(jar, credentials, policy)
        with self._lock:
            self._state = state
        return state

    def unbind(self) -> None:
        with self._lock:
            state, self._state = self._state, None
            sockets = list(self._sockets)
        if state is not None:
            state.over.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self.unbind()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress at once
        self._thread.join(timeout=2)
        self._listener.close()

    # ---- connections ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                state = self._state
                if state is not None:
                    self._sockets.add(sock)
            if state is None:
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock, state), name="gate-conn", daemon=True).start()

    def _serve(self, sock: socket.socket, state: PageState) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            self._requests(connection, sock, state, origin=None)
        except (OSError, h11.ProtocolError, FetchAborted):
            pass  # the browser went away, sent something broken, or the page ended
        finally:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _requests(self, connection: h11.Connection, sock: socket.socket, state: PageState, origin: str | None) -> None:
        """Serves the requests of one connection: absolute http:// URLs (origin None), or, inside an https
        tunnel, paths on `origin`."""
        while not state.over.is_set():
            request = self._next(connection, sock, state)
            if not isinstance(request, h11.Request):
                return
            body = self._request_body(connection, sock, state)
            if body is None:
                self._answer_refusal(connection, sock, 413, "request body too large")
                return
            target = request.target.decode("ascii", "replace")
            if request.method == b"CONNECT":
                if origin is None:
                    self._tunnel(connection, sock, target, state)
                return
            url = target if origin is None else origin + target
            if not url.startswith("http://" if origin is None else origin + "/"):
                self._answer_refusal(connection, sock, 400, "the gate forwards absolute http:// URLs and tunnels")
                return
            self._forward(connection, sock, request, url, body, state)
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    def _next(self, connection: h11.Connection, sock: socket.socket, state: PageState) -> Any:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(self._recv(sock, state))

    @staticmethod
    def _recv(sock: socket.socket, state: PageState) -> bytes:
        sock.settimeout(SLICE_SECONDS)
        while True:
            if state.over.is_set():
                raise FetchAborted("the page ended")
            try:
                return sock.recv(65536)
            except TimeoutError:
                continue

    def _request_body(self, connection: h11.Connection, sock: socket.socket, state: PageState) -> bytes | None:
        body = bytearray()
        while True:
            event = self._next(connection, sock, state)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise h11.RemoteProtocolError("unexpected event in a request body")

    # ---- policy --------------------------------------------------------------------------------------
    @staticmethod
    def _refuse(state: PageState, url: str, verdict: Verdict) -> None:
        with state.lock:
            if len(state.refusals) < MAX_REFUSALS:
                state.refusals.append(Refusal(url, verdict))
        log.debug("event=render_request_refused reason=%s", verdict.reason)

    @staticmethod
    def _count(state: PageState) -> Verdict | None:
        with state.lock:
            state.requests += 1
            over = state.requests > MAX_REQUESTS
        if over:
            return FetchFailed(Reason.RENDER_TOO_LARGE, f"the page made more than {MAX_REQUESTS} requests")
        return None

    @staticmethod
    def _cookie_header(state: PageState, url: str, header: str) -> str:
        """The browser's Cookie header without any stored credential the child's jar would not send here."""
        if not state.credentials:
            return header
        with state.lock:
            allowed = {(cookie.name, cookie.value) for cookie in state.jar.cookies_for(url)}
        pairs = [pair.strip() for pair in header.split(";")]
        kept = [pair for pair in pairs if pair.partition("=")[0] not in state.credentials
                or tuple(pair.partition("=")[::2]) in allowed]
        with state.lock:
            state.cookies_removed += len(pairs) - len(kept)
        return "; ".join(kept)

    # ---- plain HTTP ----------------------------------------------------------------------------------
    def _forward(self, connection: h11.Connection, sock: socket.socket, request: h11.Request, url: str, body: bytes,
                 state: PageState) -> None:
        method = request.method.decode("ascii", "replace")
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in request.headers]
        accept = next((value for name, value in headers if name == "accept"), "")
        navigation = accept.startswith("text/html")  # documents and frames ask for HTML first
        control = Control(cancelled=state.over)
        verdict = self._count(state) or request_refusal(self._fetcher, method, url, navigation, state.policy, control)
        if verdict is not None:
            self._refuse(state, url, verdict)
            self._answer_refusal(connection, sock, 403, str(verdict), verdict.reason)
            return
        if navigation:  # a page (a document, a frame, a hop) waits for the run's turn at the host, as on HTTP
            self._fetcher.spacing.wait_turn((state.policy.run_id, urlsplit(url).netloc), state.policy.per_host_delay,
                                            control)
        forwarded: list[tuple[str, str]] = []
        for name, value in headers:
            if name in _NOT_FORWARDED or name.startswith("proxy-"):
                continue
            if name == "cookie":
                value = self._cookie_header(state, url, value)
                if not value:
                    continue
            forwarded.append((name, value))
        forwarded.append(("accept-encoding", "gzip, deflate"))  # decompressed here, within the cap
        policy = state.policy
        outgoing = httpx.Request(method, url, headers=forwarded, content=body, extensions=request_extensions(policy))
        verdict = None
        try:
            with state.reading_turn(control), control.request(policy.timeout), self._fetcher._send(outgoing) as response:
                with state.lock:
                    self._fetcher._absorb(url, response, state.jar, [])
                    room = max(0, min(MAX_BODY_BYTES, MAX_PAGE_BYTES - state.bytes))
                content = bytes(self._fetcher._body(response, room))
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
            self._refuse(state, url, verdict)
            self._answer_refusal(connection, sock, 502, str(verdict), verdict.reason)
            return
        with state.lock:
            state.bytes += len(content)
        returned.append(("content-length", str(len(content))))
        self._send(sock, connection.send(h11.Response(status_code=status, headers=returned, reason=b"")))
        if content and method != "HEAD":
            self._send(sock, connection.send(h11.Data(data=content)))
        self._send(sock, connection.send(h11.EndOfMessage()))

    def _answer_refusal(self, connection: h11.Connection, sock: socket.socket, status: int, message: str,
                        reason: str = "") -> None:
        body = f"refused by quaero: {message}\n".encode("utf-8", "replace")
        # (no Cache-Control: with no-store, Chromium never finished a fetch whose body the page left unread)
        headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body)))]
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
    def _tunnel(self, connection: h11.Connection, sock: socket.socket, authority: str, state: PageState) -> None:
        """The browser's TLS ends here (with the gate's own certificate, which only this browser accepts)
        and each request inside is served like a plain one, to https://host: the gate is the TLS client of
        the site and checks its certificate as the HTTP path does."""
        host, _, port_text = authority.rpartition(":")
        host = host.strip("[]").lower()
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or connection.trailing_data[0]:
            verdict = FetchFailed(Reason.BAD_REDIRECT, f"the browser asked for a tunnel to {authority[:100]!r}")
            self._refuse(state, f"https://{authority[:100]}", verdict)
            self._answer_refusal(connection, sock, 400, str(verdict), verdict.reason)
            return
        self._send(sock, connection.send(h11.Response(status_code=200, headers=[], reason=b"Connection Established")))
        tls = _gate_tls().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._sockets.discard(sock)
            self._sockets.add(tls)  # (wrapping took over the socket: unbind must reach this one)
        try:
            started = time.monotonic()
            while True:
                tls.settimeout(SLICE_SECONDS)
                try:
                    tls.do_handshake()
                    break
                except TimeoutError:
                    if state.over.is_set() or time.monotonic() - started > state.policy.timeout:
                        return
            port = int(port_text)
            origin = f"https://{f'[{host}]' if ':' in host else host}{'' if port == 443 else f':{port}'}"
            inner = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
            self._requests(inner, tls, state, origin)
        except ssl.SSLError:
            pass  # the browser gave up on the handshake
        finally:
            with self._lock:
                self._sockets.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()


@functools.cache
def _gate_tls() -> ssl.SSLContext:
    """The certificate the gate shows the browser for every https host: made once per process, never
    written anywhere; contexts accept it (ignore_https_errors) because their only way out is the gate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quaero gate")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as directory:  # ssl loads a chain from files only
        cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        with open(cert_path, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols(["http/1.1"])
    return context
