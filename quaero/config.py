"""Where the services keep their data and secrets, and how clients find them: every environment
variable a client or both services read is read here (each service's own settings read the rest)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "api-token"
KEY_FILE = "secret.key"
DEFAULT_MANAGER = "127.0.0.1:50051"
DEFAULT_EXECUTOR = "127.0.0.1:50052"


class MissingToken(Exception):
    pass


def data_dir() -> Path:
    """QUAERO_DATA_DIR (default ./.quaero), resolved; nothing is created."""
    return Path(os.environ.get("QUAERO_DATA_DIR", ".quaero")).expanduser().resolve()


def ensure_data_dir() -> Path:
    path = data_dir()
    path.mkdir(parents=True, exist_ok=True)
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


def ensure_token(directory: Path | None = None) -> str:
    """The token the services require: QUAERO_API_TOKEN, else the token file, created on first use."""
    token = os.environ.get("QUAERO_API_TOKEN", "").strip()
    if token:
        return token
    return read_or_create_secret_file((directory or ensure_data_dir()) / TOKEN_FILE,
                                      lambda: secrets.token_urlsafe(32))


def read_token() -> str:
    """The token a client presents: QUAERO_API_TOKEN, else the manager's token file. Never creates one
    (a new token would only be refused)."""
    token = os.environ.get("QUAERO_API_TOKEN", "").strip()
    if token:
        return token
    path = data_dir() / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingToken(f"no API token: {path} does not exist; set QUAERO_API_TOKEN, or QUAERO_DATA_DIR to the "
                           "manager's data directory") from None


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
