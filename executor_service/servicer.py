"""quaero.executor.v1.Executor: translates proto <-> Executions and passes manager errors through."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from manager_service.errors import DomainError
from manager_service.grpc_common import abort_for, error_info, status_of, without_client_retries
from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc

from .execution import Executions

T = TypeVar("T")


def relay(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Runs call; a manager error reaches our caller with its code, message and reason unchanged."""
    try:
        return call()
    except DomainError as error:
        abort_for(context, error)
        raise
    except grpc.RpcError as error:
        reason, field = error_info(error)
        code = error.code()
        status = status_of(code, reason or code.name, error.details() or code.name, field or None)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            status = without_client_retries(status_of(code, reason or "MANAGER_UNAVAILABLE",
                                                      f"the manager is not reachable: {error.details()}"))
        context.abort_with_status(status)
        raise


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, executions: Executions) -> None:
        self.executions = executions

    def ExecuteJobDefinition(self, request: executor_pb2.ExecuteJobDefinitionRequest,
                             context: grpc.ServicerContext) -> executor_pb2.ExecuteJobDefinitionResponse:
        if not request.definition_id:
            context.abort_with_status(status_of(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_DEFINITION_ID",
                                                "definition_id is required", "definition_id"))
        started = relay(context, lambda: self.executions.execute(request.definition_id, request.request_id))
        return executor_pb2.ExecuteJobDefinitionResponse(
            parent_job_id=started.parent_job_id, metadata_persisted=started.metadata_persisted,
            children_created=started.children_created)

    def CancelExecution(self, request: executor_pb2.CancelExecutionRequest,
                        context: grpc.ServicerContext) -> executor_pb2.CancelExecutionResponse:
        status, cancelled = relay(context, lambda: self.executions.cancel(request.parent_job_id))
        return executor_pb2.CancelExecutionResponse(parent_status=status, children_cancelled=cancelled)
