"""The lease loop: lease pending pages from the manager (mostly in the call that records the pages before
them: Completions' lease_next), hand each to a PageRunner on a crawl thread,
keep their leases renewed, and stop a page within a second when its run ends, its lease is lost or
the executor stops (the watch thread: one GetJob per running run, not per page)."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from quaero import tracing
from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.convert import job_status, session_cookie_from_proto, status_label
from quaero.errors import Reason

from .crawl.control import Control, FetchAborted
from .crawl.fetcher import Fetcher
from .page import CHILD_TYPE, Completion, InFlight, PageRunner
from .render.browser import Renderer

log = logging.getLogger("quaero.executor.worker")
LEASE_SECONDS = 30
MAX_TRACKED_RUNS = 256
WATCH_SECONDS = 0.5  # how often running pages are checked against their run's status and their lease
LEASE_BATCH_DIVISOR = 4  # lease when this share of the slots is free ...
LEASE_GATHER_SECONDS = 0.02  # ... or after this long with fewer


def lease_duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


class Worker:
    def __init__(self, manager: ManagerClient, fetcher: Fetcher, workers: int, worker_id: str | None = None,
                 lease_seconds: float = LEASE_SECONDS, renderer: Renderer | None = None) -> None:
        self.manager = manager
        self.lease_seconds = lease_seconds
        self.slots = max(0, workers)
        self.worker_id = worker_id or f"executor-{uuid.uuid4().hex[:8]}"
        self.pages = PageRunner(manager, fetcher, self.run_slot, renderer, self.worker_id)
        if self.slots:
            self.pages.completions.lease_next = self
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.slots), thread_name_prefix="crawl")
        # Leases held: pages being fetched (`_fetching` of them, at most `slots`) and pages whose record
        # is on its way to the manager (at most `slots` more): a slot is free again as soon as its page
        # handed its record over.
        self._active: dict[str, InFlight] = {}
        self._fetching = 0
        self._reserved = 0  # pages a lease call in flight may bring
        self._active_lock = threading.Condition()
        # One concurrency gate per run; the oldest are forgotten (finished runs need none).
        self._run_gates: OrderedDict[str, threading.Semaphore] = OrderedDict()
        self._gates_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when a child finishes: it may have created new children
        self.children_processed = 0
        self._threads = [threading.Thread(target=self._dispatch, name="dispatch", daemon=True),
                         threading.Thread(target=self._renew, name="renew", daemon=True),
                         threading.Thread(target=self._watch, name="watch", daemon=True)]

    def start(self) -> None:
        if self.slots:
            # Pages an earlier run of this executor (same worker id) held when it died come back at once.
            self._release("start")
            for thread in self._threads:
                thread.start()

    def wake(self) -> None:
        """New pages may be leasable now (this executor created them): lease at once, not at the next poll."""
        self._wake.set()

    def _release(self, when: str) -> None:
        try:
            released = self.manager.jobs.ReleaseLeases(jobs_pb2.ReleaseLeasesRequest(worker_id=self.worker_id),
                                                       timeout=5).released
        except grpc.RpcError as error:
            log.warning("event=release_failed when=%s code=%s", when, error.code().name)  # type: ignore[attr-defined]
            return
        except ValueError:  # the channel is closed
            return
        if released:
            log.info("event=leases_released when=%s worker_id=%s count=%d", when, self.worker_id, released)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._active_lock:
            for entry in self._active.values():
                entry.control.cancel("the executor is stopping")
            self._active_lock.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.pages.close()  # the records already handed over are sent first
        if self.slots:
            self._release("stop")  # the pages this executor gave up on go back to pending now

    @property
    def in_flight(self) -> int:
        """Pages this executor holds leases on now."""
        return len(self._active)

    @contextlib.contextmanager
    def run_slot(self, run_id: str, concurrency: int, control: Control) -> Iterator[bool]:
        """Holds one of a run's `concurrency` slots in this process; yields whether it had to wait."""
        with self._gates_lock:
            gate = self._run_gates.get(run_id)
            if gate is None:
                gate = self._run_gates[run_id] = threading.Semaphore(concurrency)
                while len(self._run_gates) > MAX_TRACKED_RUNS:
                    self._run_gates.popitem(last=False)
            self._run_gates.move_to_end(run_id)
        waited = not gate.acquire(blocking=False)
        if waited:
            while not gate.acquire(timeout=WATCH_SECONDS):
                control.check()
        try:
            yield waited
        finally:
            gate.release()

    # ---- leasing -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Leases when pages have room and no record is on its way (a batch of records leases the next
        pages in its own call: Completions); so mostly at a run's start, and when a call leased fewer
        pages than there was room for (none were pending then: polled, and woken by this executor's own
        new runs and settled records)."""
        idle = 0.05
        batch = max(1, self.slots // LEASE_BATCH_DIVISOR)
        while not self._stop.is_set():
            with self._active_lock:
                while (self._free() <= 0 or self.pages.completions.pending()) and not self._stop.is_set():
                    self._active_lock.wait(0.5)
                # Lease in batches: while busy, wait (briefly) until a quarter of the slots are free, so a
                # busy crawl makes one LeaseJobs call per few pages rather than one per page.
                deadline = time.monotonic() + LEASE_GATHER_SECONDS
                while (0 < self._free() < batch and self._fetching and not self._stop.is_set()
                       and time.monotonic() < deadline):
                    self._active_lock.wait(max(0.0, deadline - time.monotonic()))
                if self._stop.is_set():
                    return
                free = self._free()
                if free <= 0 or self.pages.completions.pending():
                    continue  # (records were handed over meanwhile: their call leases)
                asked = self._lease_request(free)
            lease_began = tracing.now_ns() if tracing.enabled() else 0
            leased: jobs_pb2.LeaseJobsResponse | None = None
            try:
                leased = self.manager.jobs.LeaseJobs(asked, timeout=10)
            except grpc.RpcError as error:
                log.warning("event=lease_failed code=%s detail=%s", error.code().name,  # type: ignore[attr-defined]
                            error.details())  # type: ignore[attr-defined]
                self._stop.wait(1.0)
                continue
            except ValueError:  # the channel closed under us: shutting down
                return
            finally:
                self.granted(asked, leased, lease_began)
            if leased is None or not leased.leased_jobs:
                self._wake.wait(idle)
                self._wake.clear()
                idle = min(idle * 2, 0.5)
            else:
                idle = 0.05

    def _lease_request(self, count: int) -> jobs_pb2.LeaseJobsRequest:
        """A lease of `count` pages, reserved (under _active_lock; `granted` gives back what was not leased)."""
        self._reserved += count
        return jobs_pb2.LeaseJobsRequest(worker_id=self.worker_id, max_jobs=count,
                                         lease_duration=lease_duration(self.lease_seconds), type=CHILD_TYPE,
                                         known_sessions=self.pages.sessions.known())

    def reserve(self, freed: int) -> jobs_pb2.LeaseJobsRequest | None:
        """What a batch of `freed` records leases in its own call (Completions): as many pages as there is
        room for once they are settled."""
        with self._active_lock:
            if self._stop.is_set():
                return None
            free = self._free(freed)
            return self._lease_request(free) if free > 0 else None

    def granted(self, asked: jobs_pb2.LeaseJobsRequest, leased: jobs_pb2.LeaseJobsResponse | None,
                began_ns: int) -> None:
        """Starts the pages a lease brought (None: it failed) and gives back its reservation."""
        leased_jobs = leased.leased_jobs if leased is not None else ()
        if leased is not None:
            for session in leased.sessions:  # before any page of it starts
                self.pages.sessions.update(session.parent_job_id, session.version,
                                           [session_cookie_from_proto(item) for item in session.cookies])
        # The lease runs from when the manager granted it, a moment before now: keep a margin.
        until = time.monotonic() + self.lease_seconds * 0.9
        leased_ns = (began_ns, tracing.now_ns()) if began_ns else (0, 0)
        entries = [InFlight(item.job.id, item.job.parent_id, item.lease.lease_token, until,
                            previous=item.previous if item.HasField("previous") else None, leased_ns=leased_ns)
                   for item in leased_jobs]
        with self._active_lock:
            self._reserved -= asked.max_jobs
            for entry in entries:
                self._active[entry.job_id] = entry
            self._fetching += len(entries)
            self._active_lock.notify_all()
        for item, entry in zip(leased_jobs, entries, strict=True):
            try:
                self._pool.submit(self._run_leased, item.job, entry)
            except RuntimeError:  # shutting down: the lease expires and another executor takes it
                return

    def _free(self, settling: int = 0) -> int:
        """Pages to lease for, once `settling` records are settled (under _active_lock)."""
        return min(self.slots - self._fetching, 2 * self.slots - len(self._active) + settling) - self._reserved

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._active_lock:
                held = list(self._active.values())
            for entry in held:
                if entry.control.cancelled.is_set():
                    continue
                try:
                    self.manager.jobs.RenewLease(jobs_pb2.RenewLeaseRequest(
                        job_id=entry.job_id, lease_token=entry.token,
                        lease_duration=lease_duration(self.lease_seconds)), timeout=5)
                    entry.lease_until = time.monotonic() + self.lease_seconds * 0.9
                except grpc.RpcError as error:
                    if error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):  # type: ignore[attr-defined]
                        entry.control.cancel("the lease was lost (the page was cancelled or given to another "
                                             "executor)")
                    log.warning("event=renew_failed job_id=%s code=%s", entry.job_id,
                                error.code().name)  # type: ignore[attr-defined]
                except ValueError:
                    return

    def _watch(self) -> None:
        """Stops the pages of runs that ended (cancelled, stop_all) and of leases that ran out, within
        WATCH_SECONDS: one GetJob per running run, not per page."""
        while not self._stop.wait(WATCH_SECONDS):
            with self._active_lock:
                held = list(self._active.values())
            now = time.monotonic()
            for entry in held:
                if now > entry.lease_until:
                    entry.control.cancel("the lease ran out before it could be renewed")
            for parent_id in {entry.parent_id for entry in held if not entry.control.cancelled.is_set()}:
                try:
                    parent = self.manager.get_job(parent_id, timeout=2)
                except grpc.RpcError:
                    continue  # the manager is busy or away: the lease rules still bound the page
                except ValueError:
                    return
                if job_status(parent.status).terminal:
                    for entry in held:
                        if entry.parent_id == parent_id:
                            entry.control.cancel(f"the run is {status_label(parent.status)}")

    def _run_leased(self, job: jobs_pb2.Job, entry: InFlight) -> None:
        completion = None
        try:
            completion = self.pages.run(job, entry)
        except FetchAborted as stopped:
            log.info("event=child_abandoned job_id=%s why=%r", job.id, str(stopped))
        except grpc.RpcError as error:
            # The manager stayed unreachable (calls are retried for a minute): nothing can be recorded;
            # the lease returns the page to pending.
            log.warning("event=child_unrecorded job_id=%s code=%s", job.id, error.code().name)  # type: ignore[attr-defined]
        except Exception as error:  # a bug: the page still gets a verdict, and the worker lives on
            incident = uuid.uuid4().hex[:12]
            log.error("event=child_crashed job_id=%s incident=%s error=%s", job.id, incident, type(error).__name__,
                      exc_info=error)
            completion = Completion(jobs_pb2.JOB_STATUS_FAILED, Reason.EXECUTOR_ERROR,
                                    f"the executor failed on this page (incident {incident}, "
                                    f"{type(error).__name__}); see its log")
        finally:
            with self._active_lock:
                self._fetching -= 1
                self._active_lock.notify_all()
        if completion is None:
            if entry.span is not None:
                entry.span.set_attribute("quaero.status", "not recorded")  # (stopped, or its run ended meanwhile)
                entry.span.end()
            self._forget(job.id)
        else:
            self.pages.record(job, entry, completion, lambda: self._forget(job.id, recorded=True))

    def _forget(self, job_id: str, recorded: bool = False) -> None:
        """The page's lease is settled (recorded, refused, or left to expire): stop renewing it."""
        if recorded:
            self.children_processed += 1
        with self._active_lock:
            self._active.pop(job_id, None)
            self._active_lock.notify_all()
        self._wake.set()
