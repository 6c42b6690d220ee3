"""The executor's view of its manager, for its health: one call every PROBE_SECONDS that only the executor
role may make (RenewLease of the nil job id, which cannot exist: NOT_FOUND is the healthy answer). While
the manager is unreachable, or refuses this executor's token, the executor's service reports
NOT_SERVING (a load balancer or orchestrator stops sending it runs) and says why in its log; once the
manager answers again it reports SERVING. The overall health ("") stays liveness: the process is up."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient

log = logging.getLogger("quaero.executor")
PROBE_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
NIL_JOB_ID = "00000000-0000-0000-0000-000000000000"  # the manager makes random (version 4) ids only


class ManagerLink:
    def __init__(self, manager: ManagerClient, on_change: Callable[[bool], None]) -> None:
        self.manager = manager
        self._on_change = on_change
        self._stop = threading.Event()
        self._healthy: bool | None = None
        self._thread = threading.Thread(target=self._run, name="manager-link", daemon=True)

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """One probe; reports a change of state. True when the manager answered this executor."""
        try:
            self.manager.jobs.RenewLease(jobs_pb2.RenewLeaseRequest(job_id=NIL_JOB_ID, lease_token="probe"),
                                         timeout=PROBE_TIMEOUT_SECONDS)
            healthy, why = True, ""
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            healthy = code == grpc.StatusCode.NOT_FOUND
            why = ("refuses this executor's token (check QUAERO_EXECUTOR_TOKEN)" if code in REFUSED
                   else f"is not reachable ({code.name})")
        except ValueError:  # the channel closed: shutting down
            return False
        if healthy != self._healthy:
            if healthy:
                log.info("event=manager_link state=up")
            else:
                log.warning("event=manager_link state=down why=%r", f"the manager {why}")
            self._healthy = healthy
            self._on_change(healthy)
        return healthy

    def _run(self) -> None:
        while not self._stop.wait(PROBE_SECONDS):
            self.check()
