"""The operator console served from a thread of this process (tests, benchmarks): uvicorn on a loopback
port of its own, against services already running."""
from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


def csrf_of(html: str) -> str:
    """The CSRF token of a console page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if found is None:
        raise AssertionError("the page has no CSRF field")
    return found.group(1)


@contextlib.contextmanager
def signed_in(base_url: str, token: str, **options: Any) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the console at base_url (as a browser is, through the login form)."""
    with httpx.Client(base_url=base_url, timeout=60, **options) as web:
        login = web.get("/login")
        web.post("/login", data={"csrf": csrf_of(login.text), "token": token, "next": "/runs"})
        if not web.cookies.get("quaero_console"):
            raise RuntimeError(f"could not sign in to the console at {base_url}")
        yield web


@dataclass
class ConsoleServer:
    manager: str
    executor: str
    token: str
    idle_seconds: float = 1800.0
    app: Any = field(init=False, default=None)
    url: str = field(init=False, default="")
    _server: Any = field(init=False, default=None)
    _thread: threading.Thread | None = field(init=False, default=None)

    def start(self) -> ConsoleServer:
        import uvicorn

        from console_service.app import build_app
        from console_service.config import ConsoleSettings

        settings = ConsoleSettings("127.0.0.1", 0, self.manager, self.executor, self.token,
                                   idle_seconds=self.idle_seconds)
        self.app = build_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                     lifespan="on", timeout_graceful_shutdown=1, server_header=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="console")
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the console did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
