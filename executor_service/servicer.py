"""quaero.executor.v1.Executor: proto <-> Runs. Errors (its own, and the manager's it relays) become
status in the server's ExceptionToStatus interceptor."""
from __future__ import annotations

import grpc

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.errors import FailedPrecondition, QuaeroError, Reason, Unavailable

from .runs import Runs


def relayed_from_manager(error: QuaeroError) -> QuaeroError:
    """How a manager error reaches the executor's caller: unchanged, but for two cases that are not the
    caller's doing. An outage says so (this executor retried already; the status also tells the caller's
    client not to retry again). A refusal of the executor's own token (UNAUTHENTICATED, or
    PERMISSION_DENIED for a token of the wrong role) is this executor's misconfiguration: relayed as
    it is, it would tell a caller with a good token that its token is wrong."""
    if error.code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        reason = error.reason if error.reason not in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else Reason.MANAGER_UNAVAILABLE
        return Unavailable(reason, f"the manager is not reachable: {error.message}", error.field, error.metadata)
    if error.code_name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return FailedPrecondition(
            Reason.MANAGER_REJECTED_EXECUTOR_TOKEN, f"the manager refused this executor's own token ({error.reason}: "
            f"{error.message}); the executor needs the manager's executor token (QUAERO_EXECUTOR_TOKEN or the "
            "executor-token file): fix the executor's configuration", None, {"manager_reason": error.reason})
    return error


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, runs: Runs) -> None:
        self.runs = runs

    def ExecuteJobDefinition(self, request: executor_pb2.ExecuteJobDefinitionRequest,
                             context: grpc.ServicerContext) -> executor_pb2.ExecuteJobDefinitionResponse:
        started = self.runs.start(request.definition_id, request.request_id)
        return executor_pb2.ExecuteJobDefinitionResponse(
            parent_job_id=started.parent_job_id, metadata_persisted=started.metadata_persisted,
            children_created=started.children_created)

    def CancelExecution(self, request: executor_pb2.CancelExecutionRequest,
                        context: grpc.ServicerContext) -> executor_pb2.CancelExecutionResponse:
        status, cancelled = self.runs.cancel(request.parent_job_id)
        return executor_pb2.CancelExecutionResponse(parent_status=status,  # type: ignore[arg-type]
                                                    children_cancelled=cancelled)
