"""The crawl's HTTP transport: httpcore connections whose every connect passes the network policy and
whose every read and write is bounded by the request's deadline and its child's cancel signal.

- No cookie jar: this is an httpx *transport*, not an httpx.Client, so nothing here stores or adds
  cookies. The child's own jar (cookie_jar.py) writes the only Cookie header.
- Network policy: the host is resolved here (QUAERO_RESOLVE first, like curl --resolve), every
  address is checked against the run's policy, and the socket connects to an address that passed.
  A redirect to a private address or a name that resolves to one (DNS rebinding) is refused the same
  way. Connection pools are kept per policy, so a connection one run may use never serves another.
- Time: a request has one deadline for connect, TLS, headers and body together (httpx's timeouts
  are per read: a server trickling a byte a second kept a page for minutes). Blocking waits are cut
  into slices of at most SLICE_SECONDS, so a cancelled child, a lost lease or shutdown stops an
  in-flight request within a second.

Knows nothing of gRPC.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore
import httpx

from quaero.network_policy import NetworkPolicy

from .control import Control, current, slice_of

MAX_POOLS = 32
DNS_THREADS = 8

# httpcore logs request and response headers (Cookie, Set-Cookie) at DEBUG: never let it.
logging.getLogger("httpcore").setLevel(logging.WARNING)


class AddressBlocked(httpx.ConnectError):
    """Every address of the host is one the run's network policy refuses."""

    def __init__(self, host: str, kind: str) -> None:
        article = "an" if kind[:1] in "aeiou" else "a"
        super().__init__(f"{host} resolves to {article} {kind} address, which this crawl may not reach "
                         "(allow_private_networks / allowed_networks)")
        self.host = host
        self.kind = kind


class DnsFailed(httpx.ConnectError):
    """The host name does not resolve."""


def _is_readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class GuardedStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout: float | None = None

    def _wait_at_most(self, seconds: float) -> None:
        if seconds != self._timeout:  # (each change costs system calls; it is almost always SLICE_SECONDS)
            self._sock.settimeout(seconds)
            self._timeout = seconds

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        control, started = current(), time.monotonic()
        while True:
            self._wait_at_most(slice_of(control, started, timeout, httpcore.ReadTimeout))
            try:
                return self._sock.recv(max_bytes)
            except TimeoutError:
                continue  # a slice ended: check the deadline and the cancel signal, then go on
            except OSError as error:
                raise httpcore.ReadError(str(error) or type(error).__name__) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        control, started = current(), time.monotonic()
        view = memoryview(buffer)
        while view:
            self._wait_at_most(slice_of(control, started, timeout, httpcore.WriteTimeout))
            try:
                sent = self._sock.send(view)
            except TimeoutError:
                continue
            except OSError as error:
                raise httpcore.WriteError(str(error) or type(error).__name__) from None
            view = view[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        control, started = current(), time.monotonic()
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as error:
            self.close()
            raise httpcore.ConnectError(f"TLS: {error}") from None
        try:
            while True:
                tls.settimeout(slice_of(control, started, timeout, httpcore.ConnectTimeout))
                try:
                    tls.do_handshake()
                    return GuardedStream(tls)
                except TimeoutError:
                    continue
        except (ssl.SSLError, ssl.CertificateError) as error:
            tls.close()
            raise TlsFailed(getattr(error, "reason", None) or str(error)) from None
        except OSError as error:
            tls.close()
            raise httpcore.ConnectError(f"TLS: {error}") from None
        except BaseException:
            tls.close()
            raise

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _is_readable(self._sock)
        return None


class TlsFailed(httpx.ConnectError):
    """The TLS handshake failed (certificate, protocol)."""


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks the network policy, connects: all within the request's deadline."""

    def __init__(self, policy: NetworkPolicy, resolve: dict[str, str], dns: ThreadPoolExecutor) -> None:
        self.policy = policy
        self.resolve = resolve
        self.dns = dns

    def _addresses(self, host: str, port: int, control: Control, started: float,
                   timeout: float | None) -> list[tuple[int, Any]]:
        name = (self.resolve.get(host.lower()) or host).strip("[]")
        try:
            literal = ipaddress.ip_address(name)
        except ValueError:
            pass
        else:  # an address needs no lookup
            if literal.version == 4:
                return [(socket.AF_INET, (str(literal), port))]
            return [(socket.AF_INET6, (str(literal), port, 0, 0))]
        future = self.dns.submit(socket.getaddrinfo, name, port, type=socket.SOCK_STREAM)
        while True:
            try:
                infos = future.result(slice_of(control, started, timeout, httpcore.ConnectTimeout))
                break
            except FutureTimeout:
                continue
            except (socket.gaierror, UnicodeError) as error:
                raise DnsFailed(f"{host} does not resolve ({error})") from None
            except BaseException:
                future.cancel()
                raise
        seen: list[tuple[int, Any]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if (family, sockaddr) not in seen:
                seen.append((family, sockaddr))
        return seen

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        control, started = current(), time.monotonic()
        addresses = self._addresses(host, port, control, started, timeout)
        refusals = [self.policy.refusal(sockaddr[0]) for _family, sockaddr in addresses]
        allowed = [address for address, refusal in zip(addresses, refusals, strict=True) if refusal is None]
        if not allowed:
            raise AddressBlocked(host, next((kind for kind in refusals if kind), "unknown"))
        last = "no address"
        for family, sockaddr in allowed[:4]:
            try:
                return GuardedStream(_connect(family, sockaddr, control, started, timeout))
            except OSError as error:
                last = (error.strerror or str(error)).lower()
        raise httpcore.ConnectError(last)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not crawled")

    def sleep(self, seconds: float) -> None:
        current().wait(seconds)


def _connect(family: int, sockaddr: Any, control: Control, started: float, timeout: float | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raise OSError(code, os.strerror(code))
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while code:
            wait = slice_of(control, started, timeout, httpcore.ConnectTimeout)
            if poller.poll(int(wait * 1000) + 1):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                break
        sock.setblocking(True)
        return sock
    except BaseException:
        sock.close()
        raise


# httpcore's exceptions as httpx's (the vocabulary the fetcher and its tests speak).
_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout, httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout, httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException, httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError, httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError, httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError, httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError, httpcore.ProxyError: httpx.ProxyError,
}


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError:
        raise
    except Exception as error:
        for kind in type(error).__mro__:
            mapped = _EXCEPTIONS.get(kind)
            if mapped is not None:
                raise mapped(str(error) or type(error).__name__) from None
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        with _httpx_errors():
            self._stream.close()


class GuardedTransport(httpx.BaseTransport):
    """One connection pool per network policy (at most MAX_POOLS, least recently used closed first).
    The policy of a request is request.extensions["network_policy"] (default: public addresses only)."""

    def __init__(self, resolve: dict[str, str] | None = None, ca_bundle: str | None = None,
                 max_connections: int = 256) -> None:
        self._resolve = {host.lower(): address for host, address in (resolve or {}).items()}
        self._ssl = httpx.create_ssl_context()
        if ca_bundle:
            self._ssl.load_verify_locations(cafile=ca_bundle)
        self._max_connections = max_connections
        self._dns = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="dns")
        self._pools: OrderedDict[NetworkPolicy, httpcore.ConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def _pool(self, policy: NetworkPolicy) -> httpcore.ConnectionPool:
        with self._lock:
            pool = self._pools.get(policy)
            if pool is None:
                pool = httpcore.ConnectionPool(
                    ssl_context=self._ssl, max_connections=self._max_connections, max_keepalive_connections=64,
                    keepalive_expiry=5.0, http1=True, http2=False, retries=0,
                    network_backend=GuardedBackend(policy, self._resolve, self._dns))
                self._pools[policy] = pool
                while len(self._pools) > MAX_POOLS:
                    self._pools.popitem(last=False)[1].close()
            self._pools.move_to_end(policy)
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = request.extensions.get("network_policy") or NetworkPolicy()
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw, content=request.stream,
            extensions={key: value for key, value in request.extensions.items() if key == "timeout"})
        with _httpx_errors():
            response = self._pool(policy).handle_request(core_request)
        return httpx.Response(status_code=response.status, headers=response.headers, stream=_Body(response.stream),
                              extensions=response.extensions, request=request)

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
        self._dns.shutdown(wait=False, cancel_futures=True)
