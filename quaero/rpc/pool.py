"""The gRPC server's thread pool."""
from __future__ import annotations

import queue
import threading
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

    def _spawn_if_needed(self) -> None:
        # Called with the lock held.
        while self._threads < self._workers:
            self._threads += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
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
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the worker pool is shut down")
            self._spawn_if_needed()
        self._queue.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            count = self._threads
        for _ in range(count):
            self._queue.put(None)
