"""WatchJob streams without a thread each.

gRPC's sync server runs a streaming method in one pool thread for the stream's whole life; 1,000
watchers were 1,000 threads, and starting them cost the manager ~1.4 ms of CPU per stream. Here a
stream is a small state machine instead (gRPC's `experimental_non_blocking` handlers: the method
returns at once, and messages go out through the `send` callback it was given):

    sending --sent--> pacing --its turn--> checking --news--> sending
                                              '--none--> waiting on the topic --a state is read--> checking

A few sender threads do the sends (quaero.rpc.senders: each send blocks until gRPC has taken the message,
holds no lock, and is cut off when a client has read nothing for `senders.stall_seconds`); one timer
thread keeps each stream to its pace (WatchHub.stream_interval). The final state skips the pace, and
ends the stream."""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from quaero.errors import QuaeroError, Reason, Unavailable
from quaero.rpc.interceptors import internal_error
from quaero.rpc.senders import STALL_SECONDS, Send, Senders
from quaero.rpc.status import to_status

from .storage.records import Job
from .watch import Watcher, WatchHub, watched_state

log = logging.getLogger("quaero.manager")
WATCH_METHOD = "/quaero.manager.v1.JobManager/WatchJob"
SENDERS = 4
MAX_CACHED_MESSAGES = 4096  # watched jobs whose newest message is kept
Message = Callable[[Job], Any]


class _Stream:
    __slots__ = ("watcher", "context", "send", "last", "lock", "busy", "done", "ending", "turn")

    def __init__(self, context: grpc.ServicerContext, send: Send) -> None:
        self.watcher: Watcher  # (set right after registration; nothing reads it while `busy` is set)
        self.context = context
        self.send = send
        self.last: Any = None  # the watched state of the last message sent
        self.lock = threading.Lock()
        self.busy = True  # a send is queued or under way (at most one per stream); the first one comes
        self.done = False
        self.ending = False  # the job ended: its turn comes at once
        self.turn = 0  # the pacing entry that is current (older heap entries are stale)


class WatchStreams:
    def __init__(self, hub: WatchHub, message: Message, senders: int = SENDERS,
                 stall_seconds: float = STALL_SECONDS) -> None:
        self._hub = hub
        self.senders = Senders("watch", senders, stall_seconds)
        self._to_message = message
        self._messages: dict[str, tuple[Job, Any]] = {}  # job id -> (state, its message): _message
        self._messages_lock = threading.Lock()
        self._timers: list[tuple[float, int, _Stream, int]] = []
        self._timer_lock = threading.Condition(threading.Lock())
        self._order = itertools.count()
        self._streams: set[_Stream] = set()
        self._streams_lock = threading.Lock()
        self._stopping = False
        threading.Thread(target=self._timer_loop, name="watch-timer", daemon=True).start()

    def open(self, job_id: str, read: Callable[[str], Job], context: grpc.ServicerContext, send: Send) -> None:
        """A WatchJob stream: the job's newest state now, then each new state at the stream's pace, the final
        one at once. Returns at once; raises what `read` raises (an unknown job)."""
        stream = _Stream(context, send)
        stream.watcher = self._hub.watch(job_id, on_end=lambda: self._end_soon(stream))
        try:
            # Read after registering, so that no change in between is missed.
            first = self._hub.first_state(job_id, read)
        except BaseException:
            self._hub.unwatch(stream.watcher)
            raise
        with self._streams_lock:
            self._streams.add(stream)
        if not context.add_callback(lambda: self._close(stream)):
            self._close(stream)  # the call ended already
            return
        self._queue(stream, first)

    def stop(self) -> None:
        """Ends every stream with UNAVAILABLE (the client may reconnect to another manager)."""
        self._stopping = True
        with self._streams_lock:
            streams = list(self._streams)
        leaving = Unavailable(Reason.MANAGER_UNAVAILABLE, "the manager is shutting down; watch the job again (on "
                              "another manager, or on this one once it is back)")
        for stream in streams:
            self._finish(stream, leaving)
        self.senders.stop()
        with self._timer_lock:
            self._timer_lock.notify()

    # ---- the state machine --------------------------------------------------------------------
    def _queue(self, stream: _Stream, job: Job) -> None:
        stream.last = watched_state(job)
        self.senders.submit(stream.context, lambda: self._deliver(stream, job))

    def _sent(self, stream: _Stream, job: Job, delivered: bool) -> None:
        if not delivered:
            self._close(stream)  # the client left, or was cut off: no status of ours
            return
        if job.status.terminal:
            self._finish(stream)
            return
        with stream.lock:
            stream.busy = False
            if stream.done:
                return
            ending = stream.ending
            stream.turn += 1
            turn = stream.turn
        if ending:
            self._check(stream)
        else:
            self._at(time.monotonic() + self._hub.stream_interval(), stream, turn)

    def _check(self, stream: _Stream) -> None:
        """The stream's turn: the newest state goes out if it differs from the last one sent."""
        with stream.lock:
            if stream.done or stream.busy:
                return
            news = stream.watcher.take()
            if news is not None and watched_state(news) != stream.last:
                stream.busy = True
            else:
                news = None
        if news is not None:
            self._queue(stream, news)
        else:
            stream.watcher.call_on_news(lambda: self._check(stream))

    def _end_soon(self, stream: _Stream) -> None:
        with stream.lock:
            stream.ending = True
            stream.turn += 1  # its pacing entry is void
        self._check(stream)

    def _finish(self, stream: _Stream, error: QuaeroError | None = None) -> None:
        """Ends the stream with OK, or with `error`'s status."""
        with stream.lock:
            if stream.done:
                return
            stream.done = True
        self._forget(stream)
        try:
            if error is None:
                stream.context.set_code(grpc.StatusCode.OK)  # (a status the metrics tell from a client leaving)
            else:
                status = to_status(error)
                stream.context.set_code(status.code)
                stream.context.set_details(status.details)
                stream.context.set_trailing_metadata(status.trailing_metadata)
            stream.send(None)  # the status; returns at once
        except Exception as error:  # the call is gone already
            log.debug("event=watch_end_failed error=%s", type(error).__name__)

    def _close(self, stream: _Stream) -> None:
        """The call ended (the client left, its deadline passed, or the status went out)."""
        with stream.lock:
            stream.done = True
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        with self._streams_lock:
            known = stream in self._streams
            self._streams.discard(stream)
        if known:
            self._hub.unwatch(stream.watcher)

    # ---- threads --------------------------------------------------------------------------------
    def _deliver(self, stream: _Stream, job: Job) -> None:
        """On a sender thread: one message to one stream."""
        delivered = False
        try:
            if not stream.done:
                stream.send(self._message(job))  # blocks until gRPC took it
                delivered = stream.context.is_active()
        except Exception as error:  # a bug of ours: the stream ends with INTERNAL, not silence
            self._finish(stream, internal_error(WATCH_METHOD, error))
            return
        self._sent(stream, job, delivered)

    def _message(self, job: Job) -> Any:
        """The job as a message, built once per state the hub read, for all the streams that send it: the
        hub hands every watcher the same Job object, so identity tells a state already converted."""
        cached = self._messages.get(job.id)
        if cached is not None and cached[0] is job:
            return cached[1]
        message = self._to_message(job)
        with self._messages_lock:
            self._messages[job.id] = (job, message)
            while len(self._messages) > MAX_CACHED_MESSAGES:
                del self._messages[next(iter(self._messages))]
        return message

    def _at(self, when: float, stream: _Stream, turn: int) -> None:
        with self._timer_lock:
            heapq.heappush(self._timers, (when, next(self._order), stream, turn))
            if self._timers[0][2] is stream:
                self._timer_lock.notify()

    def _timer_loop(self) -> None:
        while not self._stopping:
            due: list[_Stream] = []
            with self._timer_lock:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _when, _order, stream, turn = heapq.heappop(self._timers)
                    if stream.turn == turn and not stream.done:
                        due.append(stream)
                if not due:
                    if self._stopping:  # (read under the lock that stop() notifies with: no lost wake-up)
                        return
                    self._timer_lock.wait(self._timers[0][0] - now if self._timers else None)
                    continue
            for stream in due:
                self._check(stream)
