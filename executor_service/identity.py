"""An executor's worker id, stable across its restarts: QUAERO_EXECUTOR_ID, else an id kept in the data
directory (executor-id, 0600). The file is locked while the executor runs, so a second executor on the
same directory takes executor-id.1 (and so on) instead of sharing the first one's id; a killed
executor's lock goes with it, so its successor finds the same id and takes back its leases at once
(ReleaseLeases) instead of waiting for them to expire."""
from __future__ import annotations

import fcntl
import os
import socket
import uuid
from pathlib import Path

ID_FILE = "executor-id"
MAX_ID_FILES = 64


class IdentityLock:
    """Holds the id file's lock for as long as the executor runs."""

    def __init__(self, worker_id: str, fd: int | None) -> None:
        self.worker_id = worker_id
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim_identity(data_dir: Path, configured: str = "") -> IdentityLock:
    if configured:
        return IdentityLock(configured, None)
    for index in range(MAX_ID_FILES):
        path = data_dir / (ID_FILE if index == 0 else f"{ID_FILE}.{index}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        worker_id = os.read(fd, 256).decode(errors="replace").strip()
        if not worker_id:
            worker_id = f"executor-{socket.gethostname()[:64]}-{uuid.uuid4().hex[:8]}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, (worker_id + "\n").encode(), 0)
        return IdentityLock(worker_id, fd)
    raise OSError(f"{MAX_ID_FILES} executors already run on {data_dir}; set QUAERO_EXECUTOR_ID")
