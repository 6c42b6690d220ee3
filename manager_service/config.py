"""The manager's settings, read from the environment once (nothing else in the manager reads it)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from quaero.config import ServerTls, Tokens, ensure_data_dir, ensure_tokens, fault_spec


@dataclass(frozen=True)
class ManagerSettings:
    data_dir: Path
    database_url: str
    tokens: Tokens
    secret_key: str = ""  # QUAERO_SECRET_KEY; empty: the secret.key file in the data directory
    tls: ServerTls | None = None
    rpc_workers: int = 0  # 0: chosen by database (see server.py)
    faults: str = ""
    keep_runs: int = 30  # QUAERO_KEEP_RUNS: runs kept per definition whose own keep_runs is 0
    # QUAERO_CLOCK_OFFSET_SECONDS: this manager's clock runs this far ahead (negative: behind). For drills
    # and tests of machines whose clocks differ: schedules still start exactly one run per tick.
    clock_offset: float = 0.0

    @classmethod
    def from_env(cls) -> ManagerSettings:
        directory = ensure_data_dir()
        url = os.environ.get("QUAERO_DATABASE_URL", "").strip() or f"sqlite:///{directory / 'quaero.db'}"
        return cls(data_dir=directory, database_url=url, tokens=ensure_tokens(directory),
                   secret_key=os.environ.get("QUAERO_SECRET_KEY", "").strip(), tls=ServerTls.from_env(),
                   rpc_workers=int(os.environ.get("QUAERO_RPC_WORKERS", "0") or 0), faults=fault_spec(),
                   keep_runs=max(1, int(os.environ.get("QUAERO_KEEP_RUNS", "30") or 30)),
                   clock_offset=float(os.environ.get("QUAERO_CLOCK_OFFSET_SECONDS", "0") or 0))
