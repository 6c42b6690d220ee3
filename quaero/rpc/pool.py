"""The gRPC server's thread pool."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any


class WorkerPool(futures.Executor):
    """The gRPC server's thread pool: `workers` threads take RPCs from one queue. (Long-lived streams
    hold no thread: WatchJob is a pushed stream, see manager_service/watch_streams.py.)

    Why not a big ThreadPoolExecutor: on 2 cores, each extra Python thread running request code
    made every call slower (GIL hand-offs; measured GetJob 2,300/s with 64 threads against 4,400/s
    with 2), while a thread that finishes a call and takes the next from the queue costs nothing.
    """

    def __init__(self, workers: int, name: str = "rpc") -> None:
        self._queue: queue.SimpleQueue[tuple[futures.Future[Any], Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = workers
        self._threads = 0
        self._name = name
        self._shutdown = False
        # What each worker thread is running, and since when (each thread writes only its own entry):
        # what the watchdog and a forced stop report.
        self._running: dict[int, tuple[tuple[Any, ...], float] | None] = {}

    def _spawn_if_needed(self) -> None:
        # Called with the lock held.
        while self._threads < self._workers:
            self._threads += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
        me = threading.get_ident()
        while True:
            try:
                item = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._shutdown:
                        self._threads -= 1
                        return
                continue
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            self._running[me] = (args, time.monotonic())
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)
            finally:
                self._running[me] = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the worker pool is shut down")
            self._spawn_if_needed()
        self._queue.put((future, fn, args, kwargs))
        return future

    def running(self) -> list[tuple[str, float]]:
        """The calls the workers are running: (method, seconds so far), the oldest first."""
        now = time.monotonic()
        calls = [(_method_of(entry[0]), now - entry[1]) for entry in list(self._running.values()) if entry]
        return sorted(calls, key=lambda call: -call[1])

    def queued(self) -> int:
        """Calls waiting for a worker."""
        return self._queue.qsize()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            count = self._threads
        for _ in range(count):
            self._queue.put(None)


def _method_of(args: tuple[Any, ...]) -> str:
    """The RPC a task of gRPC's server is for, from the method's behaviour among its arguments: the
    interceptors name theirs (`rpc_method`); an unwrapped one (health) is the servicer's method itself.
    (gRPC's call event carries no method name for registered methods.)"""
    for arg in args:
        name = getattr(arg, "rpc_method", None)
        if name:
            return str(name)
    behaviour = args[3] if len(args) > 3 else None  # (_..._response_in_pool, rpc_event, state, behaviour, ...)
    return str(getattr(behaviour, "__name__", "?"))
