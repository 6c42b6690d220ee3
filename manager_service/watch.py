"""WatchJob at scale: one read per change per watched job, fanned out to all its watchers.

Stores report the ids of the jobs each commit changed (ChangeNotifier); on PostgreSQL the listener in
pg_changes.py adds the changes other managers made. The hub keeps the watched ids that changed, and one
thread reads them (one query for all of them) and hands each result to every watcher of that job. A
watcher keeps only the newest state, so a slow stream skips the states it had no time to send
(coalescing) and never queues. A job that nobody watches costs a set lookup per write.

Every few seconds the hub also re-reads what is watched, a safety net for a change it was never told of
(a listener connection that dropped and came back)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from .storage.records import Job

log = logging.getLogger("quaero.manager")
REFRESH_SECONDS = 5.0
HUB_INTERVAL_SECONDS = 0.02  # changes within this are read together (a crawl changes its parent per page)
# Streams together send at most about this many messages a second: a message on one of many open
# streams cost the manager 0.5-0.8 ms of CPU (measured with 1,000 streams), and 1,000 watchers of one
# run at 5 a second each slowed the crawl 9x. A handful of watchers still get 5 a second; the final
# state is sent at once whatever the budget.
MESSAGES_PER_SECOND = 150
MIN_STREAM_INTERVAL_SECONDS = 0.2
Reader = Callable[[Sequence[str]], dict[str, Job]]


class Watcher:
    """One stream's mailbox: the newest state of its job, and an event when it changes."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._latest: Job | None = None
        self._event = threading.Event()
        self._closing = threading.Event()
        self._closed = False

    def offer(self, job: Job) -> None:
        self._latest = job
        self._event.set()
        if job.status.terminal:
            self._closing.set()  # the end goes out without waiting for the stream's next turn

    def wake(self) -> None:
        """Ends a wait without news (the stream's client left)."""
        self._closed = True
        self._event.set()
        self._closing.set()

    def pause(self, seconds: float) -> None:
        """Lets news pile up (only the newest is kept) for `seconds`, unless the job ends or the client leaves."""
        self._closing.wait(seconds)

    def take(self, timeout: float) -> Job | None:
        """The newest state offered since the last take, or None after `timeout` without news."""
        if not self._event.wait(timeout):
            return None
        self._event.clear()
        latest, self._latest = self._latest, None
        return latest


class WatchHub:
    def __init__(self, read: Reader, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._read = read
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._watchers: dict[str, set[Watcher]] = {}
        self._dirty: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0
        self._latest: dict[str, Job] = {}  # the newest state read of each watched job

    @property
    def watchers(self) -> int:
        return self._count

    def stream_interval(self) -> float:
        """How long a stream waits between two messages, so that all of them together keep to the budget."""
        return max(MIN_STREAM_INTERVAL_SECONDS, self._count / MESSAGES_PER_SECOND)

    def changed(self, job_ids: Iterable[str]) -> None:
        """Jobs that changed (from the stores, or another manager): the watched ones are read again."""
        if not self._watchers:  # the common case, without the lock: no one watches anything
            return
        with self._lock:
            hits = [job_id for job_id in job_ids if job_id in self._watchers]
            if hits:
                self._dirty.update(hits)
                self._wake.set()

    def latest(self, job_id: str) -> Job | None:
        """The newest state the hub read of a watched job, if it read one: a new stream's first message
        without a read of its own. (Safe: a change the hub has not read yet is offered to every watcher
        registered by then, this one included.)"""
        with self._lock:
            return self._latest.get(job_id)

    def everything_changed(self) -> None:
        """Changes may have been missed (e.g. a listener reconnected): read every watched job again."""
        with self._lock:
            self._dirty.update(self._watchers)
            self._wake.set()

    def watch(self, job_id: str) -> Watcher:
        watcher = Watcher(job_id)
        with self._lock:
            self._watchers.setdefault(job_id, set()).add(watcher)
            self._count += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watch-hub", daemon=True)
                self._thread.start()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            group = self._watchers.get(watcher.job_id)
            if group is not None and watcher in group:
                self._count -= 1
                group.discard(watcher)
                if not group:
                    del self._watchers[watcher.job_id]
                    self._latest.pop(watcher.job_id, None)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._wake.wait(self._refresh):
                self.everything_changed()  # the safety net
                continue
            with self._lock:
                self._wake.clear()
                dirty, self._dirty = self._dirty, set()
            if not dirty:
                continue
            self._stopping.wait(HUB_INTERVAL_SECONDS)  # let the burst finish: one read for all of it
            with self._lock:
                self._wake.clear()
                dirty |= self._dirty
                self._dirty = set()
            try:
                found = self._read(sorted(dirty))
            except Exception as error:  # the database is away: try again at the next change or refresh
                log.warning("event=watch_read_failed error=%s", type(error).__name__)
                continue
            with self._lock:
                targets = [(watcher, found[job_id]) for job_id in dirty if job_id in found
                           for watcher in self._watchers.get(job_id, ())]
                self._latest.update((job_id, job) for job_id, job in found.items() if job_id in self._watchers)
            for watcher, job in targets:
                watcher.offer(job)
