"""Page records to the manager, in batches and off the crawl threads: a page hands its
CompleteLeasedJobRequest over and its crawl slot goes to the next page at once; a sender thread takes
the records that queued (for a couple of milliseconds at most) and sends them in one CompleteLeasedJobs
call, one transaction on the manager, then tells each page how its record ended. A lost lease refuses
only its own page. A manager without the batch call (UNIMPLEMENTED) gets one CompleteLeasedJob per page.

The same call leases the next pages (`lease_next`, as many as the worker has room for): one call and one
transaction on the manager per batch instead of a LeaseJobs beside it, and the children those records
created are leasable in it already.

The page keeps its lease (and its renewals) until its record is settled; see Worker."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from quaero import tracing
from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import call_patiently
from quaero.rpc.status import status_code

from .crawl.control import FetchAborted

log = logging.getLogger("quaero.executor.completions")
MAX_BATCH = 32  # records per call (the manager takes up to 100)
MAX_BATCH_BYTES = 2 * 1024 * 1024  # well under gRPC's default 4 MiB per message
# How long the first record of a batch waits for others. Measured on the crawl benchmark (SQLite): 0 ms
# sent 1.7 records per call, 2 ms 2.5 (manager CPU per page 2.4 -> 2.3 ms); longer saved little more and
# held pages' leases longer.
LINGER_SECONDS = 0.002
CLOSE_SECONDS = 10.0  # how long stopping waits for the records already handed over

# How a record ended: None when recorded, else the error (a grpc.RpcError, or FetchAborted when stopping).
Settled = Callable[[BaseException | None], None]


class RecordRefused(grpc.RpcError):
    """One record of a batch refused by the manager: the status CompleteLeasedJob would have raised."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self._code, self._message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


class LeaseNext(Protocol):
    """Who takes the pages a batch's call leases (the Worker)."""

    def reserve(self, freed: int) -> jobs_pb2.LeaseJobsRequest | None:
        """What to lease with a batch of `freed` records (None: nothing); reserves room for it."""

    def granted(self, asked: jobs_pb2.LeaseJobsRequest, leased: jobs_pb2.LeaseJobsResponse | None,
                began_ns: int) -> None:
        """The reservation's outcome (None: the call failed, nothing was leased); always called."""


@dataclass
class _Pending:
    request: jobs_pb2.CompleteLeasedJobRequest
    size: int
    settled: Settled


class Completions:
    def __init__(self, manager: ManagerClient) -> None:
        self.manager = manager
        self.lease_next: LeaseNext | None = None
        self._pending = 0  # records handed over and not yet settled
        self._pending_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._batched = True  # False once the manager answered UNIMPLEMENTED
        self._sender = threading.Thread(target=self._send_loop, name="complete", daemon=True)
        self._sender.start()

    def submit(self, request: jobs_pb2.CompleteLeasedJobRequest, settled: Settled) -> None:
        """Queues one page's record; `settled` is called (on the sender thread) once it is settled."""
        with self._pending_lock:
            self._pending += 1
        self._queue.put(_Pending(request, request.ByteSize(), settled))

    def pending(self) -> int:
        """Records handed over whose call has not answered yet (it will lease the next pages)."""
        return self._pending

    def close(self) -> None:
        """Sends what was handed over already (a transient failure is not waited out any more), then stops."""
        self._closing.set()
        self._queue.put(None)
        self._sender.join(CLOSE_SECONDS)

    def _send_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size = [first], first.size
            until = time.monotonic() + LINGER_SECONDS
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:  # closing: send this batch, then stop
                    self._queue.put(None)
                    break
                if size + more.size > MAX_BATCH_BYTES:
                    self._queue.put(more)  # the next call's (records of different pages may go in any order)
                    break
                batch.append(more)
                size += more.size
            outcomes = self._send(batch)
            with self._pending_lock:
                self._pending -= len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                try:
                    pending.settled(outcome)
                except Exception:  # a bug in a page's bookkeeping must not stop every later record
                    log.exception("event=record_callback_failed job_id=%s", pending.request.job_id)

    def _wait(self, seconds: float) -> None:
        if self._closing.wait(seconds):
            raise FetchAborted("the executor is stopping")

    def _send(self, batch: list[_Pending]) -> list[BaseException | None]:
        """Each record's outcome."""
        try:
            if self._batched:
                try:
                    return self._send_batch(batch)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                        raise
                    log.warning("event=batched_records_unavailable detail=%s", error.details())  # type: ignore[attr-defined]
                    self._batched = False
            return [self._send_one(pending.request) for pending in batch]
        except (grpc.RpcError, FetchAborted) as error:  # the whole call failed: every page of it learns why
            return [error] * len(batch)
        except ValueError as error:  # the channel was closed under us: stopping
            return [FetchAborted(f"the executor is stopping ({error})")] * len(batch)

    def _send_one(self, request: jobs_pb2.CompleteLeasedJobRequest) -> BaseException | None:
        try:
            call_patiently(lambda: self.manager.jobs.CompleteLeasedJob(request, timeout=30), wait=self._wait)
        except (grpc.RpcError, FetchAborted) as error:
            return error
        return None

    def _send_batch(self, batch: list[_Pending]) -> list[BaseException | None]:
        request = jobs_pb2.CompleteLeasedJobsRequest(completions=[pending.request for pending in batch])
        taker = self.lease_next if not self._closing.is_set() else None
        asked = taker.reserve(len(batch)) if taker is not None else None
        if asked is not None:
            request.lease_next.CopyFrom(asked)
        began, leased = tracing.now_ns() if tracing.enabled() else 0, None
        try:
            response = call_patiently(lambda: self.manager.jobs.CompleteLeasedJobs(request, timeout=30), wait=self._wait)
            leased = response.leased if response.HasField("leased") else None
        finally:
            if taker is not None and asked is not None:  # (the reservation is given back whatever happened)
                taker.granted(asked, leased, began)
        if len(response.outcomes) != len(batch):
            raise RecordRefused(grpc.StatusCode.INTERNAL, f"the manager answered {len(response.outcomes)} outcomes "
                                f"for {len(batch)} records")
        return [RecordRefused(status_code(outcome.code), f"{outcome.reason}: {outcome.message}")
                if outcome.code else None for outcome in response.outcomes]
