"""WatchJob at scale: one read per change per watched job, fanned out to all its watchers.

Stores report the ids of the jobs each commit changed (ChangeNotifier); on PostgreSQL the listener in
pg_changes.py adds the changes other managers made. The hub keeps the watched ids that changed, and one
thread reads them (one query for all of them) and publishes each result on the job's topic. A stream
takes the topic's newest state when its turn comes, so a slow stream skips the states it had no time to
send (coalescing) and never queues. A job that nobody watches costs a set lookup per write.

Every few seconds the hub also re-reads what is watched, a safety net for a change it was never told of
(a listener connection that dropped and came back)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


def watched_state(job: Job) -> tuple[Any, ...]:
    """What a watcher is sent a new message for: status and progress (a metadata write alone is not news)."""
    return job.status, job.progress_current, job.progress_total, job.children_failed


class Topic:
    """One watched job: the newest state the hub read of it, a count of the news (reads that changed its
    watched_state), and the streams waiting for news. News calls only those; the others take the newest
    state when their turn comes. So a read costs the hub the same whether 1 or 1,000 streams watch
    (pushing each state into 1,000 mailboxes cost ~1 s of CPU per 1,000-page crawl)."""

    def __init__(self) -> None:
        self.latest: Job | None = None
        self.sequence = 0
        self.lock = threading.Lock()
        self.watchers: set[Watcher] = set()
        self.waiting: list[Callable[[], None]] = []


class Watcher:
    """One stream's view of its job's topic: the states it has taken, and whom to call when the job ends."""

    def __init__(self, job_id: str, topic: Topic, on_end: Callable[[], None]) -> None:
        self.job_id = job_id
        self._topic = topic
        self._taken = topic.sequence  # what was read before the stream began is its first message's business
        self.on_end = on_end

    def take(self) -> Job | None:
        """The newest state read, if there was news since the last take; else None."""
        with self._topic.lock:
            if self._topic.sequence == self._taken:
                return None
            self._taken = self._topic.sequence
            return self._topic.latest

    def call_on_news(self, callback: Callable[[], None]) -> None:
        """Calls `callback` once, when there is news this watcher has not taken (now, if there is)."""
        topic = self._topic
        with topic.lock:
            if topic.sequence == self._taken:
                topic.waiting.append(callback)
                return
        callback()


class WatchHub:
    def __init__(self, read: Reader, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._read = read
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._topics: dict[str, Topic] = {}
        self._dirty: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    @property
    def watchers(self) -> int:
        return self._count

    def stream_interval(self) -> float:
        """How long a stream waits between two messages, so that all of them together keep to the budget."""
        return max(MIN_STREAM_INTERVAL_SECONDS, self._count / MESSAGES_PER_SECOND)

    def changed(self, job_ids: Iterable[str]) -> None:
        """Jobs that changed (from the stores, or another manager): the watched ones are read again."""
        if not self._topics:  # the common case, without the lock: no one watches anything
            return
        with self._lock:
            hits = [job_id for job_id in job_ids if job_id in self._topics]
            if hits:
                self._dirty.update(hits)
                self._wake.set()

    def latest(self, job_id: str) -> Job | None:
        """The newest state the hub read of a watched job, if it read one: a new stream's first message
        without a read of its own. (Safe: a change the hub has not read yet will reach every watcher
        registered by then, this one included.)"""
        with self._lock:
            topic = self._topics.get(job_id)
            return topic.latest if topic is not None else None

    def first_state(self, job_id: str, read: Callable[[str], Job]) -> Job:
        """A new stream's first message: the newest state read of its (watched) job, else `read`'s, which
        then serves the streams that come after it. (Safe: a change the hub has not read yet will reach
        every watcher registered by then, this one included; an older read published later is followed
        by the read of that change.)"""
        latest = self.latest(job_id)
        if latest is not None:
            return latest
        job = read(job_id)
        with self._lock:
            topic = self._topics.get(job_id)
        if topic is not None:
            with topic.lock:
                if topic.latest is None:
                    topic.latest = job
        return job

    def everything_changed(self) -> None:
        """Changes may have been missed (e.g. a listener reconnected): read every watched job again."""
        with self._lock:
            self._dirty.update(self._topics)
            self._wake.set()

    def watch(self, job_id: str, on_end: Callable[[], None] = lambda: None) -> Watcher:
        """A new watcher of the job; `on_end` is called (from the hub's thread) when the job ends."""
        with self._lock:
            topic = self._topics.get(job_id)
            if topic is None:
                topic = self._topics[job_id] = Topic()
            with topic.lock:
                watcher = Watcher(job_id, topic, on_end)
                topic.watchers.add(watcher)
            self._count += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watch-hub", daemon=True)
                self._thread.start()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            topic = self._topics.get(watcher.job_id)
            if topic is not None and watcher in topic.watchers:
                self._count -= 1
                with topic.lock:
                    topic.watchers.discard(watcher)
                if not topic.watchers:
                    del self._topics[watcher.job_id]

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _publish(self, job: Job) -> None:
        with self._lock:
            topic = self._topics.get(job.id)
        if topic is None:
            return
        with topic.lock:
            news = topic.latest is None or watched_state(topic.latest) != watched_state(job)
            topic.latest = job  # (a new stream's first message is the newest state, metadata and all)
            if not news:
                return
            topic.sequence += 1
            waiting, topic.waiting = topic.waiting, []
            ending = list(topic.watchers) if job.status.terminal else []
        for callback in waiting:
            callback()
        for watcher in ending:
            watcher.on_end()  # the end goes out without waiting for the stream's next turn

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
            for job_id in sorted(dirty):
                if job_id in found:
                    self._publish(found[job_id])
