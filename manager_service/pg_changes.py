"""Changes made by other managers on the same PostgreSQL, for this manager's watchers: a connection of
its own LISTENs on quaero_jobs (migration 0004 NOTIFYs there after every UPDATE of jobs, with the
writer's application_name and the changed ids), and every notice from another manager reaches the
watch hub. Notices from this manager are skipped (the stores told the hub already). After a
(re)connection every watched job is read again: notices sent while it was away are lost."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

import psycopg

log = logging.getLogger("quaero.manager")
CHANNEL = "quaero_jobs"


class Changed(Protocol):
    """What the listener reports to (the watch hub)."""

    def changed(self, job_ids: Iterable[str]) -> None: ...

    def everything_changed(self) -> None: ...


class ChangeListener:
    def __init__(self, url: str, instance: str, changed: Changed) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._instance = instance
        self._changed = changed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        pause = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, application_name=f"{self._instance}-listener",
                                     connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._changed.everything_changed()
                    pause = 0.5
                    while not self._stopping.is_set():
                        for notice in connection.notifies(timeout=1.0):
                            self._heard(notice.payload)
            except psycopg.Error as error:
                log.warning("event=change_listener_lost error=%s retry_in=%.1f", type(error).__name__, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, 10.0)

    def _heard(self, payload: str) -> None:
        writer, _, ids = payload.partition(" ")
        if writer == self._instance:
            return
        if ids == "*":
            self._changed.everything_changed()
        else:
            self._changed.changed(ids.split())
