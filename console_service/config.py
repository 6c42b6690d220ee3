"""The console's settings: where it listens (loopback unless told otherwise), the services it is a client
of, the operator token it calls them with, TLS, and how long an idle session lasts."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from quaero.config import DEFAULT_EXECUTOR, DEFAULT_MANAGER, ServerTls

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_IDLE_MINUTES = 30.0


class UnsafeListen(ValueError):
    """A non-loopback address without TLS and without the flag that accepts plain HTTP there."""


def split_listen(listen: str) -> tuple[str, int]:
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise ValueError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), not {listen!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ConsoleSettings:
    host: str
    port: int
    manager: str
    executor: str
    token: str
    tls: ServerTls | None = None
    tls_ca: Path | None = None  # the certificate the services' TLS is checked against
    idle_seconds: float = DEFAULT_IDLE_MINUTES * 60
    allow_public_http: bool = False

    def __post_init__(self) -> None:
        # The console holds the operator token: on a network, its session cookie and the token typed at
        # the login page must not cross it in clear.
        if not is_loopback(self.host) and self.tls is None and not self.allow_public_http:
            raise UnsafeListen(f"refusing to serve the console on {self.host}, which is not a loopback address, "
                               "without TLS: set QUAERO_TLS_CERT and QUAERO_TLS_KEY (or --tls-cert/--tls-key), or "
                               "pass --allow-public-http if a proxy in front of it terminates TLS")
        if self.idle_seconds <= 0:
            raise ValueError("the idle timeout must be a positive number of minutes")

    @property
    def secure_cookies(self) -> bool:
        return self.tls is not None


def idle_minutes_from_env() -> float:
    value = os.environ.get("QUAERO_CONSOLE_IDLE_MINUTES", "").strip()
    try:
        return float(value) if value else DEFAULT_IDLE_MINUTES
    except ValueError:
        raise ValueError(f"QUAERO_CONSOLE_IDLE_MINUTES must be a number of minutes, not {value!r}") from None


def service_addresses(manager: str | None, executor: str | None) -> tuple[str, str]:
    """The services the console is a client of: the flags, else QUAERO_MANAGER / QUAERO_EXECUTOR, else the
    defaults (as the CLI finds them)."""
    return (manager or os.environ.get("QUAERO_MANAGER") or DEFAULT_MANAGER,
            executor or os.environ.get("QUAERO_EXECUTOR") or DEFAULT_EXECUTOR)
