"""Where the manager keeps its data and secrets, from the environment."""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "api-token"
KEY_FILE = "secret.key"


def data_dir() -> Path:
    path = Path(os.environ.get("QUAERO_DATA_DIR", ".quaero")).expanduser().resolve()
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


def api_token(directory: Path | None = None) -> str:
    """The bearer token every RPC but health needs: QUAERO_API_TOKEN, else the token file."""
    token = os.environ.get("QUAERO_API_TOKEN", "").strip()
    if token:
        return token
    return read_or_create_secret_file((directory or data_dir()) / TOKEN_FILE, lambda: secrets.token_urlsafe(32))


class MissingToken(Exception):
    pass


def client_token() -> str:
    """The token a client presents: QUAERO_API_TOKEN, else the manager's token file. Never creates one
    (a new token would only be refused)."""
    token = os.environ.get("QUAERO_API_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("QUAERO_DATA_DIR", ".quaero")).expanduser().resolve() / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise MissingToken(f"no API token: {path} does not exist; set QUAERO_API_TOKEN, or QUAERO_DATA_DIR to the "
                           "manager's data directory") from None


@dataclass(frozen=True)
class ManagerSettings:
    data_dir: Path
    database_url: str
    api_token: str

    @classmethod
    def from_env(cls) -> ManagerSettings:
        directory = data_dir()
        url = os.environ.get("QUAERO_DATABASE_URL", "").strip() or f"sqlite:///{directory / 'quaero.db'}"
        return cls(data_dir=directory, database_url=url, api_token=api_token(directory))
