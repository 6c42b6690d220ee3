"""Workers: lease child jobs from the manager, crawl one page each, report back in one call.

Each child finds its credentials through the database, never through memory:
GetJob(parent).metadata.auth_id, else the job definition's auth_id, else no cookies (said in its log).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from quaero.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2

from manager_service.client import ManagerClient
from manager_service.convert import cookie_from_proto, dict_to_struct, struct_to_dict
from manager_service.cookies import StoredCookie

from .cookie_jar import CookieJar
from .fetcher import DEFAULT_LOGGED_OUT_PATTERNS, DEFAULT_USER_AGENT, Fetcher, FetchFailed, FetchPolicy, LoggedOut
from .pages import LinkScope, parse_html

log = logging.getLogger("quaero.executor.worker")
CHILD_TYPE = "crawl_page"
LEASE_SECONDS = 30
CREDENTIALS_TTL_SECONDS = 2.0
MAX_TRACKED_RUNS = 256
T = TypeVar("T")
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def lease_duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def call_patiently(call: Callable[[], T], give_up_after: float = 60.0) -> T:
    """Retries a call whose failure is transient (manager restarting) for up to give_up_after seconds."""
    deadline = time.monotonic() + give_up_after
    pause = 0.2
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in TRANSIENT or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


@dataclass
class AuthChoice:
    auth_id: str
    source: str  # "parent metadata", "job definition", or "none"


class CredentialsCache:
    """Credentials by auth_id, kept for a couple of seconds: the children of one run share them, and a
    re-import is seen within CREDENTIALS_TTL_SECONDS. Which auth_id a child uses is still read from
    its parent (GetJob) every time."""

    def __init__(self, manager: ManagerClient) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, auth_pb2.Credentials]] = {}

    def get(self, auth_id: str) -> auth_pb2.Credentials:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(auth_id)
        if entry and now - entry[0] < CREDENTIALS_TTL_SECONDS:
            return entry[1]
        credentials = call_patiently(lambda: self._manager.auth.GetCredentials(
            auth_pb2.GetCredentialsRequest(id=auth_id)))
        with self._lock:
            self._entries[auth_id] = (now, credentials)
        return credentials


class Worker:
    def __init__(self, manager: ManagerClient, fetcher: Fetcher, workers: int, worker_id: str | None = None,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.manager = manager
        self.lease_seconds = lease_seconds
        self.fetcher = fetcher
        self.slots = max(0, workers)
        self.worker_id = worker_id or f"executor-{uuid.uuid4().hex[:8]}"
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.slots), thread_name_prefix="crawl")
        self._active: dict[str, str] = {}  # job id -> lease token
        self._active_lock = threading.Condition()
        # One concurrency gate per run; the oldest are forgotten (finished runs need none).
        self._parent_gates: OrderedDict[str, threading.Semaphore] = OrderedDict()
        self._gates_lock = threading.Lock()
        self._credentials = CredentialsCache(manager)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when a child finishes: it may have created new children
        self.children_processed = 0
        self._threads = [threading.Thread(target=self._dispatch, name="dispatch", daemon=True),
                         threading.Thread(target=self._renew, name="renew", daemon=True)]

    def start(self) -> None:
        if self.slots:
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._active_lock:
            self._active_lock.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- leasing -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        idle = 0.05
        while not self._stop.is_set():
            with self._active_lock:
                while len(self._active) >= self.slots and not self._stop.is_set():
                    self._active_lock.wait(0.5)
                free = self.slots - len(self._active)
            if self._stop.is_set():
                return
            try:
                response = self.manager.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(
                    worker_id=self.worker_id, max_jobs=free, lease_duration=lease_duration(self.lease_seconds),
                    type=CHILD_TYPE), timeout=10)
            except grpc.RpcError as error:
                log.warning("event=lease_failed code=%s detail=%s", error.code().name, error.details())
                self._stop.wait(1.0)
                continue
            if not response.leased_jobs:
                self._wake.wait(idle)
                self._wake.clear()
                idle = min(idle * 2, 0.5)
                continue
            idle = 0.05
            with self._active_lock:
                for leased in response.leased_jobs:
                    self._active[leased.job.id] = leased.lease.lease_token
            for leased in response.leased_jobs:
                self._pool.submit(self._run_leased, leased)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._active_lock:
                held = list(self._active.items())
            for job_id, token in held:
                try:
                    self.manager.jobs.RenewLease(jobs_pb2.RenewLeaseRequest(
                        job_id=job_id, lease_token=token, lease_duration=lease_duration(self.lease_seconds)), timeout=5)
                except grpc.RpcError as error:
                    log.warning("event=renew_failed job_id=%s code=%s", job_id, error.code().name)

    def _run_leased(self, leased: jobs_pb2.LeasedJob) -> None:
        try:
            self.process(leased.job, leased.lease.lease_token)
            self.children_processed += 1
        except Exception as error:  # one broken child must not take the worker down
            log.error("event=child_crashed job_id=%s error=%s", leased.job.id, type(error).__name__)
        finally:
            with self._active_lock:
                self._active.pop(leased.job.id, None)
                self._active_lock.notify_all()
            self._wake.set()

    # ---- one child ---------------------------------------------------------------------------
    def resolve_auth(self, parent: jobs_pb2.Job) -> AuthChoice:
        metadata = struct_to_dict(parent.metadata)
        auth_id = metadata.get("auth_id")
        if isinstance(auth_id, str) and auth_id:
            return AuthChoice(auth_id, "parent metadata")
        definition_id = metadata.get("job_definition_id") or struct_to_dict(parent.config).get("job_definition_id")
        if definition_id:
            try:
                definition = call_patiently(lambda: self.manager.definitions.GetJobDefinition(
                    definitions_pb2.GetJobDefinitionRequest(id=definition_id)))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                if definition.auth_id:
                    return AuthChoice(definition.auth_id, "job definition")
        return AuthChoice("", "none")

    def _log(self, job_id: str, level: jobs_pb2.LogLevel.ValueType, message: str) -> None:
        try:
            self.manager.jobs.AddJobLog(jobs_pb2.AddJobLogRequest(job_id=job_id, level=level, message=message),
                                        timeout=5)
        except grpc.RpcError as error:
            log.warning("event=job_log_failed job_id=%s code=%s", job_id, error.code().name)

    def _parent_of(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        return call_patiently(lambda: self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.parent_id)))

    def process(self, job: jobs_pb2.Job, token: str) -> None:
        parent = self._parent_of(job)
        if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
            return  # cancelled or finished meanwhile; the manager has settled this child already
        settings = struct_to_dict(parent.config)
        crawl = settings.get("crawl", {})
        gate = self._gate_for(parent.id, int(crawl.get("concurrency") or 8))
        if not gate.acquire(blocking=False):
            gate.acquire()
            # We waited for the run's concurrency limit: the run may have been cancelled meanwhile.
            parent = self._parent_of(job)
            if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
                gate.release()
                return
        try:
            self._crawl(job, token, parent, crawl)
        finally:
            gate.release()

    def _gate_for(self, parent_id: str, concurrency: int) -> threading.Semaphore:
        with self._gates_lock:
            gate = self._parent_gates.get(parent_id)
            if gate is None:
                gate = self._parent_gates[parent_id] = threading.Semaphore(concurrency)
                while len(self._parent_gates) > MAX_TRACKED_RUNS:
                    self._parent_gates.popitem(last=False)
            self._parent_gates.move_to_end(parent_id)
            return gate

    def _crawl(self, job: jobs_pb2.Job, token: str, parent: jobs_pb2.Job, crawl: dict[str, Any]) -> None:
        config = struct_to_dict(job.config)  # an auth_id in here is deliberately ignored
        url = str(config.get("url", ""))
        depth = int(config.get("depth", job.depth))
        choice = self.resolve_auth(parent)
        cookies: list[StoredCookie] = []
        user_agent = crawl.get("user_agent") or ""
        if choice.source == "none":
            self._log(job.id, jobs_pb2.LOG_LEVEL_WARNING, "no auth_id in the parent's metadata or its job "
                      "definition: crawling without cookies (logged out)")
        else:
            if choice.source != "parent metadata":
                self._log(job.id, jobs_pb2.LOG_LEVEL_WARNING, f"parent metadata has no auth_id; using auth_id "
                          f"{choice.auth_id!r} from the {choice.source}")
            try:
                credentials = self._credentials.get(choice.auth_id)
            except grpc.RpcError as error:
                self._finish(job, token, jobs_pb2.JOB_STATUS_FAILED, error=f"cannot load credentials "
                             f"{choice.auth_id!r}: {error.details()}", reason="AUTH_NOT_FOUND")
                return
            cookies = [cookie_from_proto(c) for c in credentials.cookies]
            user_agent = user_agent or credentials.user_agent
        policy = FetchPolicy(
            user_agent=user_agent or DEFAULT_USER_AGENT, timeout=float(crawl.get("request_timeout_seconds") or 30),
            per_host_delay=float(crawl.get("per_host_delay_seconds") or 0),
            obey_robots=not crawl.get("ignore_robots_txt"),
            logged_out_patterns=list(crawl.get("logged_out_patterns") or DEFAULT_LOGGED_OUT_PATTERNS))
        jar = CookieJar(cookies)
        if cookies and jar.all_expired_for(url):
            self._finish(job, token, jobs_pb2.JOB_STATUS_FAILED, reason="AUTH_EXPIRED",
                         error=f"not authenticated: every stored cookie for {url} has expired; import fresh cookies")
            return
        try:
            page = self.fetcher.fetch(url, jar, policy)
        except LoggedOut as error:
            self._finish(job, token, jobs_pb2.JOB_STATUS_FAILED, error=str(error), reason=error.reason)
            return
        except FetchFailed as error:
            if error.reason == "ROBOTS_DISALLOWED":
                # Obeying robots.txt is not a failure of the crawl: the page is skipped, and says so.
                self._finish(job, token, jobs_pb2.JOB_STATUS_COMPLETED, result={"url": url, "skipped": str(error)})
                return
            self._finish(job, token, jobs_pb2.JOB_STATUS_FAILED, error=str(error), reason=error.reason)
            return
        parsed = parse_html(page.text) if "html" in page.content_type else None
        document = documents_pb2.Document(
            url=url, final_url=page.final_url, title=parsed.title if parsed else "",
            text=parsed.text if parsed else page.text, content_hash=hashlib.sha256(page.body).hexdigest(),
            status_code=page.status_code, content_type=page.content_type)
        children: list[jobs_pb2.ChildJobSpec] = []
        if parsed and depth < int(crawl.get("max_depth", 3)):
            scope = LinkScope(start_urls=list(crawl.get("start_urls") or [url]),
                              same_site_only=bool(crawl.get("same_site_only", True)),
                              include=list(crawl.get("include_patterns") or []),
                              exclude=list(crawl.get("exclude_patterns") or []))
            for link in scope.follow(parsed.links, page.final_url):
                if self._may_fetch(link, policy):
                    children.append(child_spec(link, depth + 1))
        result = {"url": url, "final_url": page.final_url, "status_code": page.status_code,
                  "links_found": len(children), "authenticated_with": choice.source,
                  "cookies_sent": bool(cookies)}
        self._finish(job, token, jobs_pb2.JOB_STATUS_COMPLETED, result=result, document=document, children=children,
                     max_children=int(crawl.get("max_pages", 0)))

    def _may_fetch(self, url: str, policy: FetchPolicy) -> bool:
        """robots.txt's verdict on a discovered link; a host that cannot be asked gets a child, which
        then fails with its own error instead of this page."""
        if not policy.obey_robots:
            return True
        try:
            return self.fetcher.robots_allows(url, policy)
        except FetchFailed:
            return True

    def _finish(self, job: jobs_pb2.Job, token: str, status: jobs_pb2.JobStatus.ValueType, *, error: str = "", reason: str = "",
                result: dict[str, Any] | None = None, document: documents_pb2.Document | None = None,
                children: list[jobs_pb2.ChildJobSpec] | None = None, max_children: int = 0) -> None:
        request = jobs_pb2.CompleteLeasedJobRequest(job_id=job.id, lease_token=token, status=status, error=error,
                                                    error_reason=reason, children=children or [],
                                                    max_children=max_children)
        dict_to_struct(result or {}, request.result)
        if document is not None:
            request.document.CopyFrom(document)
        try:
            call_patiently(lambda: self.manager.jobs.CompleteLeasedJob(request))
        except grpc.RpcError as failure:
            # ABORTED: the lease was lost (expired or cancelled); the next holder redoes the work.
            log.warning("event=complete_failed job_id=%s code=%s detail=%s", job.id, failure.code().name,
                        failure.details())
        if status == jobs_pb2.JOB_STATUS_FAILED:
            log.info("event=child_failed job_id=%s reason=%s", job.id, reason)


def child_spec(url: str, depth: int) -> jobs_pb2.ChildJobSpec:
    spec = jobs_pb2.ChildJobSpec(type=CHILD_TYPE, name=url, dedup_key=url, depth=depth)
    dict_to_struct({"url": url, "depth": depth}, spec.config)
    return spec
