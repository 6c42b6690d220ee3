"""Changes between managers on one PostgreSQL, for their watchers.

ChangePublisher: what this manager's stores changed (the ChangeNotifier's ids) goes out as one NOTIFY on
quaero_jobs every PUBLISH_SECONDS at most, carrying this manager's instance name and the ids ("*" for
more than 100). It replaced a statement trigger that NOTIFYed after every UPDATE of jobs: ~75 us of the
database's CPU per write, and a notice per write for every listener to parse (see README, Benchmarks).

ChangeListener: a connection of its own LISTENs on quaero_jobs, and every notice from another manager
reaches the watch hub (this manager's own are skipped: the stores told the hub already). After a
(re)connection every watched job is read again: notices sent while it was away are lost. A notice lost
with a manager that died before publishing is covered by the hub's periodic re-read."""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import psycopg

log = logging.getLogger("quaero.manager")
CHANNEL = "quaero_jobs"
PUBLISH_SECONDS = 0.02  # changes within this go out in one notice (watchers elsewhere hear within ~50 ms)
MAX_IDS_PER_NOTICE = 100  # (a notice's payload is at most 8,000 bytes)


class ChangePublisher:
    def __init__(self, connect: Callable[[], Any], instance: str) -> None:
        self._connect = connect  # an autocommit DB-API connection from the manager's pool
        self._instance = instance
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(5)

    def changed(self, job_ids: Iterable[str]) -> None:
        """After a commit (the ChangeNotifier's listener): these jobs changed."""
        with self._lock:
            self._pending.update(job_ids)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._stopping.wait(PUBLISH_SECONDS)  # let the burst finish: one notice for all of it
            self._wake.clear()
            with self._lock:
                ids, self._pending = self._pending, set()
            if ids:
                self._publish(ids)
        with self._lock:
            ids, self._pending = self._pending, set()
        if ids:
            self._publish(ids)  # what the last writes changed, before the manager goes

    def _publish(self, ids: set[str]) -> None:
        listed = "*" if len(ids) > MAX_IDS_PER_NOTICE else " ".join(sorted(ids))
        try:
            connection = self._connect()
            try:
                with contextlib.closing(connection.cursor()) as cursor:
                    cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._instance} {listed}"))
            except psycopg.OperationalError as error:
                connection.invalidate(error)  # (not back into the pool)
                raise
            finally:
                connection.close()
        except Exception as error:  # the database is away: watchers elsewhere catch up at their next re-read
            log.warning("event=change_publish_failed error=%s", type(error).__name__)


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
