"""Answers a misbehaving web server gives, for the tests of what a hostile site may cost a crawl.
Each is a Response whose `raw` writer owns the socket (status line included)."""
from __future__ import annotations

import select
import socket
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

from quaero.testing.site import Response


@dataclass
class Watch:
    """When the crawler let go of a connection the hostile answer was holding."""
    started: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)


def _client_gone(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def raw(data: bytes) -> Response:
    """Exactly these bytes, then the connection closes."""
    return Response(raw=lambda sock: sock.sendall(data))


def trickle(head: bytes, body: bytes = b"", interval: float = 1.0, watch: Watch | None = None) -> Response:
    """`head` one byte per `interval` (then `body` the same way) until done or the client leaves."""
    def write(sock: socket.socket) -> None:
        if watch is not None:
            watch.started.append(time.monotonic())
        try:
            for byte in head + body:
                if _client_gone(sock):
                    break
                sock.sendall(bytes([byte]))
                time.sleep(interval)
        except OSError:
            pass
        if watch is not None:
            watch.closed.append(time.monotonic())
    return Response(raw=write)


def slow_body(size: int = 10_000, interval: float = 1.0, watch: Watch | None = None) -> Response:
    """Headers at once, then a body of `size` bytes at one byte per `interval`."""
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {size}\r\n\r\n").encode()

    def write(sock: socket.socket) -> None:
        sock.sendall(head)
        trickle(b"x" * size, interval=interval, watch=watch).raw(sock)  # type: ignore[misc]
    return Response(raw=write)


def silent(max_seconds: float = 60.0, watch: Watch | None = None) -> Response:
    """Accepts the request and never answers (until the client leaves)."""
    def write(sock: socket.socket) -> None:
        if watch is not None:
            watch.started.append(time.monotonic())
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline and not _client_gone(sock):
            time.sleep(0.05)
        if watch is not None:
            watch.closed.append(time.monotonic())
    return Response(raw=write)


@lru_cache(maxsize=8)
def gzipped_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, built without holding them (1 GiB -> about 1 MB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    parts = []
    for start in range(0, size, len(chunk)):
        parts.append(compressor.compress(chunk[: min(len(chunk), size - start)]))
    parts.append(compressor.flush())
    return b"".join(parts)


def gzip_bomb(size: int, content_type: str = "text/html") -> Response:
    """A small gzip body that inflates to `size` bytes of zeros."""
    return Response(body=gzipped_zeros(size), content_type=content_type, headers=[("Content-Encoding", "gzip")])
