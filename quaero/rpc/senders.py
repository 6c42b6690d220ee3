"""Threads that send the messages of pushed streams (`interceptors.pushed_stream`).

A send on gRPC's sync server blocks until gRPC's completion-queue thread has taken the message. That
one thread also runs every call's end-of-call callbacks (`context.add_callback`). So a send must never
wait while holding a lock that such a callback takes: the callback would wait for the lock, the send for
the callback's thread, and the whole server would stop (grpcio-health-checking's HealthServicer did
exactly this; see quaero/rpc/health.py). Here sends run on a few threads of their own, holding no lock
of ours, and a send that a client has not taken for `stall_seconds` (it stopped reading and its window
is full) is cut off by cancelling its call, so that no client can hold a sender for ever."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

log = logging.getLogger("quaero.grpc")
STALL_SECONDS = 30.0
Work = Callable[[], None]
Send = Callable[[Any], None]  # a pushed stream's send: a message, or None for the call's status


class Senders:
    def __init__(self, name: str, threads: int, stall_seconds: float = STALL_SECONDS) -> None:
        self.name = name
        self.stall_seconds = stall_seconds  # how long a client that reads nothing may hold a sender
        self._queue: queue.SimpleQueue[tuple[grpc.ServicerContext, Work] | None] = queue.SimpleQueue()
        # What each thread is sending and since when (each thread writes only its own slot).
        self._slots: list[tuple[grpc.ServicerContext, float] | None] = [None] * threads
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, args=(slot,), name=f"{name}-send-{slot + 1}",
                                          daemon=True) for slot in range(threads)]
        self._threads.append(threading.Thread(target=self._cut_stalled_loop, name=f"{name}-stalls", daemon=True))
        for thread in self._threads:
            thread.start()

    def submit(self, context: grpc.ServicerContext, work: Work) -> None:
        """Runs `work` (which sends on the call of `context`, and may submit more) on a sender thread."""
        self._queue.put((context, work))

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._slots:
            self._queue.put(None)

    def _send_loop(self, slot: int) -> None:
        while (item := self._queue.get()) is not None:
            context, work = item
            self._slots[slot] = (context, time.monotonic())
            try:
                work()
            except Exception as error:  # the work's own errors are its business; never lose the thread
                log.error("event=send_failed senders=%s error=%s", self.name, type(error).__name__)
            finally:
                self._slots[slot] = None

    def _cut_stalled_loop(self) -> None:
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            for busy in list(self._slots):
                if busy is not None and now - busy[1] > self.stall_seconds:
                    context, since = busy
                    log.warning("event=stream_stalled senders=%s seconds=%.0f", self.name, now - since)
                    context.cancel()  # the blocked send returns, and the sender goes on
