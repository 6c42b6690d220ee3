"""A server that notices it has stopped answering.

Once a second the watchdog calls health Check through the server's own stack: a private Unix socket the
server also listens on (in a 0700 directory of its own, so it works under TLS and reaches no one else),
gRPC's completion-queue thread, and a worker of the pool. When no check has been answered for
`stall_seconds`, whether because every worker is stuck in a handler or because the completion-queue
thread is, it logs `event=server_stalled` with the calls the workers are running and every thread's
stack, and sets `quaero_server_stalled` to 1 (`quaero_server_stalls_total` counts such episodes); once a
check is answered again it logs `event=server_recovered`. An operator sees a freeze instead of silence."""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..metrics import SERVER_PROBE_SECONDS, SERVER_STALLED, SERVER_STALLS
from .pool import WorkerPool

log = logging.getLogger("quaero.grpc")
STALL_SECONDS = 10.0
PROBE_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0


class Watchdog:
    def __init__(self, server: grpc.Server, pool: WorkerPool, stall_seconds: float = STALL_SECONDS) -> None:
        """Adds the private port to `server` (before it starts)."""
        self.pool = pool
        self.stall_seconds = stall_seconds
        self.stalled = False
        self._directory = Path(tempfile.mkdtemp(prefix="quaero-probe-"))  # 0700
        self._address = f"unix:{self._directory / 'probe.sock'}"
        if server.add_insecure_port(self._address) == 0:
            raise OSError(f"cannot listen on {self._address}")
        self._stop = threading.Event()
        self._channel: grpc.Channel | None = None
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._channel = grpc.insecure_channel(self._address)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(PROBE_TIMEOUT_SECONDS + 1)
        if self._channel is not None:
            self._channel.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _run(self) -> None:
        assert self._channel is not None
        check = health_pb2_grpc.HealthStub(self._channel).Check
        answered = time.monotonic()
        while not self._stop.wait(PROBE_SECONDS):
            started = time.monotonic()
            try:
                check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_SECONDS)
                ok = True
            except grpc.RpcError:
                ok = False
            except ValueError:  # the channel closed: stopping
                return
            now = time.monotonic()
            SERVER_PROBE_SECONDS.set(now - started)
            if ok:
                answered = now
                if self.stalled:
                    self.stalled = False
                    SERVER_STALLED.set(0)
                    log.warning("event=server_recovered seconds=%.1f", now - started)
            elif not self.stalled and now - answered >= self.stall_seconds and not self._stop.is_set():
                self.stalled = True
                SERVER_STALLED.set(1)
                SERVER_STALLS.inc()
                log.error("event=server_stalled seconds=%.1f %s", now - answered, describe_running(self.pool))
                log.error("event=thread_stacks\n%s", thread_stacks())


def describe_running(pool: WorkerPool) -> str:
    """What the server's workers are doing, as key=value: the calls running (method and seconds, oldest
    first) and how many wait for a worker."""
    calls = ",".join(f"{method}:{seconds:.1f}s" for method, seconds in pool.running()) or "none"
    return f"running={calls} queued={pool.queued()}"


def thread_stacks() -> str:
    """Every thread's stack (file, line and function names only: no values, so no secret)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, '?')} ({ident})\n{''.join(traceback.format_stack(frame))}")
    return "".join(parts)
