"""Where the services keep their data and secrets, and how clients find them: every environment
variable a client or both services read is read here (each service's own settings read the rest)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "api-token"  # the operator token
EXECUTOR_TOKEN_FILE = "executor-token"
KEY_FILE = "secret.key"
DEFAULT_MANAGER = "127.0.0.1:50051"
DEFAULT_EXECUTOR = "127.0.0.1:50052"


class MissingToken(Exception):
    pass


def data_dir() -> Path:
    """QUAERO_DATA_DIR (default ./.quaero), resolved; nothing is created."""
    return Path(os.environ.get("QUAERO_DATA_DIR", ".quaero")).expanduser().resolve()


def ensure_data_dir() -> Path:
    """The data directory, created private (0700: it holds tokens, keys and crawled logged-in pages); one an
    older release left open to others is made private."""
    path = data_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def read_or_create_secret_file(path: Path, make: Callable[[], str]) -> str:
    """Reads a secret file, creating it with mode 0600 on first use (O_EXCL: two starters agree)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        value = make()
        handle.write(value + "\n")
    return value


@dataclass(frozen=True)
class Tokens:
    """The two bearer tokens (README, "Roles"): the operator's (people, the CLI, other services: everything
    but cookie values and leases) and the executor's (leases and cookie values, and the job calls a crawl
    makes)."""
    operator: str
    executor: str


def _token(variable: str, path: Path, create: bool, what: str = "API token") -> str:
    token = os.environ.get(variable, "").strip()
    if token:
        return token
    if create:
        return read_or_create_secret_file(path, lambda: secrets.token_urlsafe(32))
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingToken(f"no {what}: {path} does not exist; set {variable}, or QUAERO_DATA_DIR to the manager's "
                           "data directory") from None


def ensure_tokens(directory: Path | None = None) -> Tokens:
    """The tokens the manager accepts: QUAERO_API_TOKEN and QUAERO_EXECUTOR_TOKEN, else the token files in
    the data directory, created (0600) on first use."""
    directory = directory or ensure_data_dir()
    return Tokens(_token("QUAERO_API_TOKEN", directory / TOKEN_FILE, create=True),
                  _token("QUAERO_EXECUTOR_TOKEN", directory / EXECUTOR_TOKEN_FILE, create=True))


def read_token() -> str:
    """The operator token a client presents: QUAERO_API_TOKEN, else the manager's token file. Never creates
    one (a new token would only be refused)."""
    return _token("QUAERO_API_TOKEN", data_dir() / TOKEN_FILE, create=False)


def read_executor_token() -> str:
    """The token an executor presents to the manager: QUAERO_EXECUTOR_TOKEN, else the executor-token file."""
    return _token("QUAERO_EXECUTOR_TOKEN", data_dir() / EXECUTOR_TOKEN_FILE, create=False, what="executor token")


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path

    @classmethod
    def from_env(cls) -> ServerTls | None:
        """QUAERO_TLS_CERT and QUAERO_TLS_KEY: serve TLS when both are set."""
        cert, key = os.environ.get("QUAERO_TLS_CERT", ""), os.environ.get("QUAERO_TLS_KEY", "")
        return cls(Path(cert), Path(key)) if cert and key else None


def client_tls_ca() -> Path | None:
    """QUAERO_TLS_CA: the certificate clients trust for the services (TLS when set)."""
    ca = os.environ.get("QUAERO_TLS_CA", "")
    return Path(ca) if ca else None


def fault_spec() -> str:
    """QUAERO_FAULT_INJECT, for failure tests only (see quaero.rpc.interceptors.FaultInjection)."""
    return os.environ.get("QUAERO_FAULT_INJECT", "")


def _seconds(variable: str, default: float) -> float:
    value = os.environ.get(variable, "").strip()
    try:
        seconds = float(value) if value else default
    except ValueError:
        raise ValueError(f"{variable} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds < 86400:
        raise ValueError(f"{variable} must be more than 0 and less than a day of seconds, not {value!r}")
    return seconds


def stop_seconds(default: float) -> float:
    """QUAERO_STOP_SECONDS: how long a stopping service may take (graceful up to it, then a hard exit)."""
    return _seconds("QUAERO_STOP_SECONDS", default)


def stall_seconds(default: float) -> float:
    """QUAERO_STALL_SECONDS: how long a server may answer none of its watchdog's checks before it logs a stall."""
    return _seconds("QUAERO_STALL_SECONDS", default)
