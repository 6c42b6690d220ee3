"""What every command shares: where the services are (ctx.obj), one-line errors, and the output."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import typer
from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.table import Column

from ..client import ExecutorClient, ManagerClient
from ..config import MissingToken, client_tls_ca, read_token
from ..rpc.status import from_rpc_error

T = TypeVar("T")
# Piped output is not cut to 80 columns: ids and URLs must survive `| grep` and scripts.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """Ends the command with this one line on stderr and exit code 1."""


def fail(message: str) -> None:
    raise CliError(message)


@dataclass
class Target:
    """The services a command talks to (the global options), with clients made on first use."""
    manager: str
    executor: str
    _manager: ManagerClient | None = field(default=None, repr=False)
    _executor: ExecutorClient | None = field(default=None, repr=False)

    @staticmethod
    def _token() -> str:
        try:
            return read_token()
        except MissingToken as error:
            raise CliError(str(error)) from None

    def manager_client(self) -> ManagerClient:
        if self._manager is None:
            self._manager = ManagerClient.connect(self.manager, self._token(), tls_ca=client_tls_ca())
        return self._manager

    def executor_client(self) -> ExecutorClient:
        if self._executor is None:
            self._executor = ExecutorClient.connect(self.executor, self._token(), tls_ca=client_tls_ca())
        return self._executor

    def close(self) -> None:
        for client in (self._manager, self._executor):
            if client is not None:
                client.close()


def target(ctx: typer.Context) -> Target:
    found = ctx.find_object(Target)
    assert found is not None, "the app's callback sets the target"
    return found


def manager(ctx: typer.Context) -> ManagerClient:
    return target(ctx).manager_client()


@contextlib.contextmanager
def describing(what: str) -> Iterator[None]:
    """A gRPC error inside becomes one line saying what failed, why, and what to do."""
    try:
        yield
    except grpc.RpcError as failure:
        error = from_rpc_error(failure)
        if error.code_name == "UNAVAILABLE":
            raise CliError(f"{what}: the service is not reachable ({error.message}); is `quaero up` running?") \
                from None
        if error.code_name == "UNAUTHENTICATED":
            raise CliError(f"{what}: {error.message}") from None
        where = f" [{error.field}]" if error.field else ""
        reason = f", {error.reason}" if error.reason != error.code_name else ""
        raise CliError(f"{what}: {error.message}{where} ({error.code_name}{reason})") from None


def rpc(call: Callable[[], T], what: str) -> T:
    with describing(what):
        return call()


def when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds:
        return "-"
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def id_column() -> Column:
    return Column("id", no_wrap=True, min_width=36)
