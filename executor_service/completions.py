"""Page records to the manager in batches: a page's thread hands its CompleteLeasedJobRequest over and
waits; a sender thread takes whatever records have queued (while its previous call was in flight) and
sends them in one CompleteLeasedJobs call, one transaction on the manager. Nothing waits on purpose: a
lone page is sent at once, a busy crawl sends a few per call. Each page gets its own outcome: a lost
lease refuses only that page. A manager without the batch call (UNIMPLEMENTED) gets one
CompleteLeasedJob per page."""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import grpc

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import call_patiently

from .crawl.control import Control, FetchAborted

log = logging.getLogger("quaero.executor.completions")
MAX_BATCH = 32  # records per call (the manager takes up to 100)
MAX_BATCH_BYTES = 2 * 1024 * 1024  # well under gRPC's default 4 MiB per message
SENDERS = 2  # calls in flight at once: one can be recorded while the next batch is gathering


class RecordRefused(grpc.RpcError):
    """One record of a batch refused by the manager: the status CompleteLeasedJob would have raised."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self._code, self._message, self.reason = code, message, reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


@dataclass
class _Pending:
    request: jobs_pb2.CompleteLeasedJobRequest
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Completions:
    def __init__(self, manager: ManagerClient) -> None:
        self.manager = manager
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._batched = True  # False once the manager answered UNIMPLEMENTED
        self._senders = [threading.Thread(target=self._send_loop, name=f"complete-{n}", daemon=True)
                         for n in range(SENDERS)]
        for sender in self._senders:
            sender.start()

    def close(self) -> None:
        self._stop.set()
        for _ in self._senders:
            self._queue.put(None)
        for sender in self._senders:
            sender.join(5)

    def record(self, request: jobs_pb2.CompleteLeasedJobRequest, control: Control) -> None:
        """Records one page; raises the grpc.RpcError its record met (the batch's, or its own), or
        FetchAborted when the page was stopped meanwhile (the record may still land: its lease decides)."""
        pending = _Pending(request, request.ByteSize())
        self._queue.put(pending)
        while not pending.done.wait(0.5):
            control.check()
        if pending.error is not None:
            raise pending.error

    def _send_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size = [first], first.size
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # closing: finish this batch, then stop
                    self._queue.put(None)
                    break
                if size + more.size > MAX_BATCH_BYTES:
                    self._queue.put(more)  # the next call's (order among pages does not matter)
                    break
                batch.append(more)
                size += more.size
            self._send(batch)

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise FetchAborted("the executor is stopping")

    def _send(self, batch: list[_Pending]) -> None:
        try:
            if self._batched:
                try:
                    self._send_batch(batch)
                    return
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                        raise
                    log.warning("event=batch_completions_unavailable detail=%s", error.details())  # type: ignore[attr-defined]
                    self._batched = False
            for pending in batch:
                try:
                    self._send_one(pending.request)
                except (grpc.RpcError, FetchAborted) as error:
                    pending.error = error
                pending.done.set()
        except (grpc.RpcError, FetchAborted) as error:  # the whole call failed: every page of it learns why
            for pending in batch:
                pending.error = error
        except ValueError as error:  # the channel was closed under us: shutting down
            for pending in batch:
                pending.error = FetchAborted(f"the executor is stopping ({error})")
        finally:
            for pending in batch:
                pending.done.set()

    def _send_one(self, request: jobs_pb2.CompleteLeasedJobRequest) -> None:
        call_patiently(lambda: self.manager.jobs.CompleteLeasedJob(request, timeout=30), wait=self._wait)

    def _send_batch(self, batch: list[_Pending]) -> None:
        request = jobs_pb2.CompleteLeasedJobsRequest(completions=[pending.request for pending in batch])
        response = call_patiently(lambda: self.manager.jobs.CompleteLeasedJobs(request, timeout=30), wait=self._wait)
        for pending, outcome in zip(batch, response.outcomes, strict=True):
            if outcome.code:
                pending.error = RecordRefused(_CODES.get(outcome.code, grpc.StatusCode.UNKNOWN),
                                              outcome.message, outcome.reason)
