"""The executor's settings: the command line plus the environment, read once."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from quaero.config import ServerTls, client_tls_ca, fault_spec, read_executor_token, read_token

from .crawl.fetcher import parse_resolve
from .render.browser import DEFAULT_PAGES, DEFAULT_RECYCLE_AFTER


@dataclass(frozen=True)
class ExecutorSettings:
    listen: str
    manager: str
    token: str  # the operator token, which callers of this executor present
    manager_token: str  # the executor token, which this executor presents to the manager
    workers: int = 16
    lease_seconds: float = 30.0
    resolve: dict[str, str] = field(default_factory=dict)  # QUAERO_RESOLVE: host -> address, like curl --resolve
    ca_bundle: str | None = None  # QUAERO_CA_BUNDLE: extra CA certificates for https sites
    tls: ServerTls | None = None  # serve TLS
    manager_tls_ca: Path | None = None  # trust for the manager (QUAERO_TLS_CA)
    faults: str = ""
    worker_id: str = ""  # stable across restarts (identity.py); empty: a new one per process
    browser_pages: int = DEFAULT_PAGES  # pages rendered at once (render = "js"), in one browser
    browser_recycle_after: int = DEFAULT_RECYCLE_AFTER  # a fresh browser after this many pages

    @classmethod
    def from_env(cls, listen: str, manager: str, workers: int, lease_seconds: float,
                 browser_pages: int = DEFAULT_PAGES) -> ExecutorSettings:
        return cls(listen=listen, manager=manager, token=read_token(), manager_token=read_executor_token(),
                   browser_pages=browser_pages,
                   worker_id=os.environ.get("QUAERO_EXECUTOR_ID", "").strip(),
                   workers=workers, lease_seconds=lease_seconds,
                   resolve=parse_resolve(os.environ.get("QUAERO_RESOLVE", "")),
                   ca_bundle=os.environ.get("QUAERO_CA_BUNDLE") or None, tls=ServerTls.from_env(),
                   manager_tls_ca=client_tls_ca(), faults=fault_spec())
