"""grpc.health.v1 that cannot freeze its server.

Why not grpcio-health-checking's HealthServicer (1.85): its Watch and its set() send to watchers while
holding the servicer's lock. A send waits for gRPC's completion-queue thread, and that thread runs the
end-of-call callback of every cancelled Watch, which takes the same lock. One client that opens a Watch
and cancels it while another Watch starts (or while set() runs) is enough: the completion-queue thread
waits for the lock, the sender for the completion-queue thread, and from then on the server answers
nothing, health included, and a graceful stop waits for ever (enter_graceful_shutdown takes the lock too).

Here nothing sends while holding a lock: Check and set() only read and write the statuses; a Watch is a
pushed stream whose messages go out on sender threads (quaero.rpc.senders), each stream with at most one
send under way and only the newest status waiting behind it; the end-of-call callback only takes the
registry lock, which no send ever holds."""
from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .interceptors import PUSHED, pushed_stream
from .senders import Send, Senders

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SENDERS = 2


class _Watch:
    """One Watch stream: at most one send under way; `pending` is the newest status not yet sent."""
    __slots__ = ("context", "send", "lock", "pending", "busy", "done", "last", "ending")

    def __init__(self, context: grpc.ServicerContext, send: Send) -> None:
        self.context = context
        self.send = send
        self.lock = threading.Lock()
        self.pending: int | None = None
        self.busy = False
        self.done = False
        self.last: int | None = None  # the status last sent
        self.ending = False  # end the call (status OK) once `pending` is out


class Health(health_pb2_grpc.HealthServicer):
    def __init__(self, senders: Senders | None = None) -> None:
        self._lock = threading.Lock()  # statuses and the registry; never held while sending
        self._statuses: dict[str, int] = {"": SERVING}
        self._watches: dict[str, set[_Watch]] = {}
        self._shutting_down = False
        self._senders = senders or Senders("health", SENDERS)

    # ---- the service ------------------------------------------------------------------------------
    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        with self._lock:
            status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown service {request.service!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    @pushed_stream
    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext,  # type: ignore[override]
              send: Send) -> Any:
        watch = _Watch(context, send)
        with self._lock:
            status = self._statuses.get(request.service, SERVICE_UNKNOWN)
            self._watches.setdefault(request.service, set()).add(watch)
            ending = self._shutting_down
        if not context.add_callback(lambda: self._forget(request.service, watch)):
            self._forget(request.service, watch)  # the call ended already
            return PUSHED
        self._offer(watch, status, ending)
        return PUSHED

    # ---- what the server says ---------------------------------------------------------------------
    def set(self, service: str, status: int) -> None:
        """Sets a service's status (after enter_graceful_shutdown, ignored); its watchers are told."""
        with self._lock:
            if self._shutting_down or self._statuses.get(service) == status:
                return
            self._statuses[service] = status
            watches = list(self._watches.get(service, ()))
        for watch in watches:
            self._offer(watch, status)

    def status(self, service: str) -> int | None:
        with self._lock:
            return self._statuses.get(service)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; each watcher is told, and its call then ends (so that open
        Watch streams do not hold the server's stop for its whole grace period)."""
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            for service in self._statuses:
                self._statuses[service] = NOT_SERVING
            watches = [(service, watch) for service, group in self._watches.items() for watch in group]
        for service, watch in watches:
            self._offer(watch, NOT_SERVING if service in self._statuses else SERVICE_UNKNOWN, ending=True)

    def stop(self) -> None:
        self._senders.stop()

    # ---- the streams ------------------------------------------------------------------------------
    def _offer(self, watch: _Watch, status: int, ending: bool = False) -> None:
        with watch.lock:
            if watch.done:
                return
            watch.pending = status
            watch.ending = watch.ending or ending
            if watch.busy:
                return  # the sender takes the newest status when its send is out
            watch.busy = True
        self._senders.submit(watch.context, lambda: self._drain(watch))

    def _drain(self, watch: _Watch) -> None:
        """On a sender thread: sends the newest status until none is waiting (no lock held while sending),
        then, when the stream is ending, its status."""
        while True:
            with watch.lock:
                if watch.done:
                    watch.busy = False
                    return
                status, watch.pending = watch.pending, None
                news = status is not None and status != watch.last
                if not news:
                    if not watch.ending:
                        watch.busy = False
                        return
                    watch.done = True
            if not news:
                watch.send(None)  # the call's status (OK); returns at once
                return
            watch.send(health_pb2.HealthCheckResponse(status=status))
            watch.last = status
            if not watch.context.is_active():
                with watch.lock:
                    watch.done = True
                return

    def _forget(self, service: str, watch: _Watch) -> None:
        """The call ended (the client cancelled, its deadline passed, or the status went out). Runs on
        gRPC's completion-queue thread: it takes only locks that no send holds."""
        with watch.lock:
            watch.done = True
        with self._lock:
            group = self._watches.get(service)
            if group is not None:
                group.discard(watch)
                if not group:
                    del self._watches[service]
