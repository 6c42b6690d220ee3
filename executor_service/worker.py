"""Workers: lease child jobs from the manager, crawl one page each, report back in one call.

Each child finds its credentials through the database, never through memory:
GetJob(parent).metadata.auth_id, else the job definition's auth_id, else no cookies (said in its log).

Every leased page ends with a verdict, promptly: a document, a failure with a specific reason, or
(for a transient refusal such as robots.txt answering 503) a retry later. Nothing a site sends can
leave a lease to expire: that is left for executors that really died. A page whose run is cancelled,
whose lease is lost or whose executor stops is abandoned within a second (the monitor thread).
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2

from manager_service.client import ManagerClient
from manager_service.convert import cookie_from_proto, dict_to_struct, struct_to_dict
from manager_service.cookies import StoredCookie
from manager_service.document_limits import MAX_TEXT_BYTES, truncate_utf8
from manager_service.network_policy import NetworkPolicy, parse_networks
from manager_service.patterns import compile_all
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2

from .content import decode_text, is_text
from .cookie_jar import CookieJar
from .fetcher import DEFAULT_LOGGED_OUT_PATTERNS, DEFAULT_USER_AGENT, Fetcher, FetchPolicy, FetchResult, Verdict
from .pages import LinkScope, ParsedPage, parse_html
from .transport import Control, FetchAborted

log = logging.getLogger("quaero.executor.worker")
CHILD_TYPE = "crawl_page"
LEASE_SECONDS = 30
CREDENTIALS_TTL_SECONDS = 2.0
MAX_TRACKED_RUNS = 256
MAX_PAGE_ATTEMPTS = 4  # a page retried (ROBOTS_UNAVAILABLE, RATE_LIMITED...) fails after this many tries
WATCH_SECONDS = 0.5  # how often running pages are checked against their run's status and their lease
PARSE_SLOTS = 1  # threads that decode and parse pages (see Worker._read); parsing holds the GIL anyway
MAX_TIMEOUT_SECONDS, MAX_DELAY_SECONDS = 300.0, 60.0
T = TypeVar("T")
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
TERMINAL = {jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED}


def lease_duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def call_patiently(call: Callable[[], T], give_up_after: float = 60.0, control: Control | None = None) -> T:
    """Retries a call whose failure is transient (manager restarting, database reconnecting) with
    backoff for up to give_up_after seconds; a cancelled child stops waiting at once."""
    deadline = time.monotonic() + give_up_after
    pause = 0.2
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in TRANSIENT or time.monotonic() > deadline:
                raise
        if control is not None:
            control.wait(pause)
        else:
            time.sleep(pause)
        pause = min(pause * 2, 2.0)


def _bounded(value: Any, default: float, low: float, high: float) -> float:
    """A number from a run's config within sane limits (definitions are checked when stored; runs
    started before that check are not)."""
    try:
        number = float(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return default
    return min(max(number, low), high) if math.isfinite(number) else default


@lru_cache(maxsize=256)
def _network_policy(allow_private: bool, networks: tuple[str, ...]) -> NetworkPolicy:
    try:
        return NetworkPolicy(allow_private, parse_networks(networks))
    except ValueError:
        return NetworkPolicy(allow_private)


@dataclass
class AuthChoice:
    auth_id: str
    source: str  # "parent metadata", "job definition", or "none"


@dataclass
class InFlight:
    """A leased page this process works on."""
    job_id: str
    parent_id: str
    token: str
    lease_until: float  # monotonic; past it the manager may give the page to someone else
    control: Control = field(default_factory=Control)


@dataclass
class Completion:
    """How a page ends, as CompleteLeasedJob says it."""
    status: jobs_pb2.JobStatus.ValueType
    reason: str = ""
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    document: documents_pb2.Document | None = None
    children: list[jobs_pb2.ChildJobSpec] = field(default_factory=list)
    max_children: int = 0
    retry_after: float = 0.0


class CredentialsCache:
    """Credentials by auth_id, kept for a couple of seconds: the children of one run share them, and a
    re-import is seen within CREDENTIALS_TTL_SECONDS. Which auth_id a child uses is still read from
    its parent (GetJob) every time."""

    def __init__(self, manager: ManagerClient) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, auth_pb2.Credentials]] = {}

    def get(self, auth_id: str, control: Control | None = None) -> auth_pb2.Credentials:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(auth_id)
        if entry and now - entry[0] < CREDENTIALS_TTL_SECONDS:
            return entry[1]
        credentials = call_patiently(lambda: self._manager.auth.GetCredentials(
            auth_pb2.GetCredentialsRequest(id=auth_id)), control=control)
        with self._lock:
            self._entries[auth_id] = (now, credentials)
            for stale in [key for key, (at, _c) in self._entries.items() if now - at > CREDENTIALS_TTL_SECONDS]:
                del self._entries[stale]
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
        self._active: dict[str, InFlight] = {}
        self._active_lock = threading.Condition()
        # One concurrency gate per run; the oldest are forgotten (finished runs need none).
        self._parent_gates: OrderedDict[str, threading.Semaphore] = OrderedDict()
        self._gates_lock = threading.Lock()
        self._credentials = CredentialsCache(manager)
        self._parsers = ThreadPoolExecutor(max_workers=PARSE_SLOTS, thread_name_prefix="parse")
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when a child finishes: it may have created new children
        self.children_processed = 0
        self._threads = [threading.Thread(target=self._dispatch, name="dispatch", daemon=True),
                         threading.Thread(target=self._renew, name="renew", daemon=True),
                         threading.Thread(target=self._watch, name="watch", daemon=True)]

    def start(self) -> None:
        if self.slots:
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._active_lock:
            for entry in self._active.values():
                entry.control.cancel("the executor is stopping")
            self._active_lock.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._parsers.shutdown(wait=True, cancel_futures=True)

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
            except ValueError:  # the channel closed under us: shutting down
                return
            if not response.leased_jobs:
                self._wake.wait(idle)
                self._wake.clear()
                idle = min(idle * 2, 0.5)
                continue
            idle = 0.05
            # The lease runs from when the manager granted it, a moment before now: keep a margin.
            until = time.monotonic() + self.lease_seconds * 0.9
            entries = [InFlight(leased.job.id, leased.job.parent_id, leased.lease.lease_token, until)
                       for leased in response.leased_jobs]
            with self._active_lock:
                for entry in entries:
                    self._active[entry.job_id] = entry
            for leased, entry in zip(response.leased_jobs, entries, strict=True):
                try:
                    self._pool.submit(self._run_leased, leased.job, entry)
                except RuntimeError:  # shutting down: the lease expires and another executor takes it
                    return

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
                    if error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):
                        entry.control.cancel("the lease was lost (the page was cancelled or given to another "
                                             "executor)")
                    log.warning("event=renew_failed job_id=%s code=%s", entry.job_id, error.code().name)
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
                    parent = self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id), timeout=2)
                except grpc.RpcError:
                    continue  # the manager is busy or away: the lease rules still bound the page
                except ValueError:
                    return
                if parent.status in TERMINAL:
                    status = jobs_pb2.JobStatus.Name(parent.status).removeprefix("JOB_STATUS_").lower()
                    for entry in held:
                        if entry.parent_id == parent_id:
                            entry.control.cancel(f"the run is {status}")

    def _run_leased(self, job: jobs_pb2.Job, entry: InFlight) -> None:
        try:
            self.process(job, entry)
            self.children_processed += 1
        except FetchAborted as stopped:
            log.info("event=child_abandoned job_id=%s why=%r", job.id, str(stopped))
        except grpc.RpcError as error:
            # The manager stayed unreachable (calls are retried for a minute): nothing can be recorded;
            # the lease returns the page to pending.
            log.warning("event=child_unrecorded job_id=%s code=%s", job.id, error.code().name)
        except Exception as error:  # a bug: the page still gets a verdict, and the worker lives on
            incident = uuid.uuid4().hex[:12]
            log.error("event=child_crashed job_id=%s incident=%s error=%s", job.id, incident, type(error).__name__,
                      exc_info=error)
            self._record(job, entry, Completion(jobs_pb2.JOB_STATUS_FAILED, "EXECUTOR_ERROR",
                                                f"the executor failed on this page (incident {incident}, "
                                                f"{type(error).__name__}); see its log"))
        finally:
            with self._active_lock:
                self._active.pop(job.id, None)
                self._active_lock.notify_all()
            self._wake.set()

    # ---- one child ---------------------------------------------------------------------------
    def resolve_auth(self, parent: jobs_pb2.Job, control: Control | None = None) -> AuthChoice:
        metadata = struct_to_dict(parent.metadata)
        auth_id = metadata.get("auth_id")
        if isinstance(auth_id, str) and auth_id:
            return AuthChoice(auth_id, "parent metadata")
        definition_id = metadata.get("job_definition_id") or struct_to_dict(parent.config).get("job_definition_id")
        if definition_id:
            try:
                definition = call_patiently(lambda: self.manager.definitions.GetJobDefinition(
                    definitions_pb2.GetJobDefinitionRequest(id=definition_id)), control=control)
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

    def _parent_of(self, job: jobs_pb2.Job, control: Control) -> jobs_pb2.Job:
        return call_patiently(lambda: self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.parent_id)),
                              control=control)

    def process(self, job: jobs_pb2.Job, entry: InFlight) -> None:
        control = entry.control
        parent = self._parent_of(job, control)
        if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
            return  # cancelled or finished meanwhile; the manager has settled this child already
        crawl = struct_to_dict(parent.config).get("crawl", {})
        gate = self._gate_for(parent.id, int(_bounded(crawl.get("concurrency"), 8, 1, 256)))
        if not gate.acquire(blocking=False):
            while not gate.acquire(timeout=WATCH_SECONDS):
                control.check()
            # We waited for the run's concurrency limit: the run may have been cancelled meanwhile.
            parent = self._parent_of(job, control)
            if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
                gate.release()
                return
        try:
            completion = self._crawl(job, parent, crawl, control)
        finally:
            gate.release()
        self._record(job, entry, completion)

    def _gate_for(self, parent_id: str, concurrency: int) -> threading.Semaphore:
        with self._gates_lock:
            gate = self._parent_gates.get(parent_id)
            if gate is None:
                gate = self._parent_gates[parent_id] = threading.Semaphore(concurrency)
                while len(self._parent_gates) > MAX_TRACKED_RUNS:
                    self._parent_gates.popitem(last=False)
            self._parent_gates.move_to_end(parent_id)
            return gate

    def _policy(self, parent: jobs_pb2.Job, crawl: dict[str, Any], user_agent: str) -> FetchPolicy:
        networks = crawl.get("allowed_networks") or []
        return FetchPolicy(
            user_agent=user_agent or DEFAULT_USER_AGENT,
            timeout=_bounded(crawl.get("request_timeout_seconds"), 30.0, 0.1, MAX_TIMEOUT_SECONDS),
            per_host_delay=_bounded(crawl.get("per_host_delay_seconds"), 0.0, 0.0, MAX_DELAY_SECONDS),
            obey_robots=not crawl.get("ignore_robots_txt"),
            logged_out=compile_all(tuple(crawl.get("logged_out_patterns") or DEFAULT_LOGGED_OUT_PATTERNS)),
            network=_network_policy(bool(crawl.get("allow_private_networks")),
                                    tuple(str(n) for n in networks) if isinstance(networks, list) else ()),
            run_id=parent.id)

    def _crawl(self, job: jobs_pb2.Job, parent: jobs_pb2.Job, crawl: dict[str, Any], control: Control) -> Completion:
        config = struct_to_dict(job.config)  # an auth_id in here is deliberately ignored
        url = str(config.get("url", ""))
        depth = int(config.get("depth", job.depth))
        choice = self.resolve_auth(parent, control)
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
                credentials = self._credentials.get(choice.auth_id, control)
            except grpc.RpcError as error:
                reason = "AUTH_NOT_FOUND" if error.code() == grpc.StatusCode.NOT_FOUND else "CREDENTIALS_UNAVAILABLE"
                return Completion(jobs_pb2.JOB_STATUS_FAILED, reason,
                                  f"cannot load credentials {choice.auth_id!r}: {error.details()}")
            cookies = [cookie_from_proto(c) for c in credentials.cookies]
            user_agent = user_agent or credentials.user_agent
        policy = self._policy(parent, crawl, user_agent)
        jar = CookieJar(cookies)
        if cookies and jar.all_expired_for(url):
            return Completion(jobs_pb2.JOB_STATUS_FAILED, "AUTH_EXPIRED",
                              f"not authenticated: every stored cookie for {url} has expired; import fresh cookies")
        try:
            page = self.fetcher.fetch(url, jar, policy, control)
        except Verdict as verdict:
            if verdict.reason == "ROBOTS_DISALLOWED":
                # Obeying robots.txt is not a failure of the crawl: the page is skipped, and says so.
                return Completion(jobs_pb2.JOB_STATUS_COMPLETED, result={"url": url, "skipped": str(verdict)})
            if verdict.retry_after is not None:
                if job.attempts < MAX_PAGE_ATTEMPTS:
                    return Completion(jobs_pb2.JOB_STATUS_PENDING, verdict.reason, f"{verdict} (attempt "
                                      f"{job.attempts} of {MAX_PAGE_ATTEMPTS})", retry_after=verdict.retry_after)
                return Completion(jobs_pb2.JOB_STATUS_FAILED, verdict.reason,
                                  f"{verdict}; gave up after {job.attempts} attempts")
            return Completion(jobs_pb2.JOB_STATUS_FAILED, verdict.reason, str(verdict))
        log.debug("event=page_fetched job_id=%s status=%d hops=%d body_bytes=%d", job.id, page.status_code,
                  len(page.hops), len(page.body))
        content_hash = hashlib.sha256(page.body).hexdigest()
        parsed, text, truncated = self._read(page)
        document = documents_pb2.Document(
            url=url, final_url=page.final_url, title=parsed.title if parsed else "", text=text,
            text_truncated=truncated, content_hash=content_hash, status_code=page.status_code,
            content_type=page.content_type)
        children: list[jobs_pb2.ChildJobSpec] = []
        dropped = parsed.links_dropped if parsed else 0
        if parsed and depth < int(_bounded(crawl.get("max_depth"), 3, 0, 1000)):
            scope = LinkScope(start_urls=list(crawl.get("start_urls") or [url]),
                              same_site_only=bool(crawl.get("same_site_only", True)),
                              include=list(crawl.get("include_patterns") or []),
                              exclude=list(crawl.get("exclude_patterns") or []))
            links, over = scope.follow(parsed.links, page.final_url)
            dropped += over
            for link in links:
                # robots.txt as already known (no request here): a host not asked yet gets a child,
                # which asks it itself; a slow robots.txt elsewhere must not hold up this page.
                if not policy.obey_robots or self.fetcher.robots_cached(link, policy) is not False:
                    children.append(child_spec(link, depth + 1))
        result: dict[str, Any] = {
            "url": url, "final_url": page.final_url, "status_code": page.status_code, "links_found": len(children),
            "authenticated_with": choice.source, "cookies_sent": bool(cookies)}
        if truncated:
            result["text_truncated"] = True
        if dropped:
            result["links_dropped"] = dropped
        if page.refused_cookies:
            result["refused_cookies"] = [{"name": name, "reason": reason[:300]} for name, reason in page.refused_cookies]
        return Completion(jobs_pb2.JOB_STATUS_COMPLETED, result=result, document=document, children=children,
                          max_children=int(_bounded(crawl.get("max_pages"), 0, 0, 10_000_000)))

    def _read(self, page: FetchResult) -> tuple[ParsedPage | None, str, bool]:
        """(parsed HTML or None, stored text, whether it was cut). Decoding and parsing take several
        times a body's size in memory (libxml2's state for deeply nested tags: ~5x) and hold the GIL
        anyway, so they run on PARSE_SLOTS threads of their own rather than on every crawl thread: the
        C allocator keeps what a thread freed for that thread, and 16 crawl threads each keeping a big
        page's worth held 490 MiB; one parser thread holds at most one (README, "Limits"). Parsing holds
        the GIL, so more parser threads would not parse faster."""
        if not is_text(page.content_type):
            page.body = b""
            return None, "", False
        body, page.body = page.body, b""
        return self._parsers.submit(_decode_and_parse, body, page.content_type).result()

    def _complete(self, job: jobs_pb2.Job, entry: InFlight, completion: Completion) -> None:
        request = jobs_pb2.CompleteLeasedJobRequest(
            job_id=job.id, lease_token=entry.token, status=completion.status, error=completion.error,
            error_reason=completion.reason, children=completion.children, max_children=completion.max_children)
        dict_to_struct(completion.result, request.result)
        if completion.document is not None:
            request.document.CopyFrom(completion.document)
        if completion.status == jobs_pb2.JOB_STATUS_PENDING:
            request.retry_after.FromTimedelta(timedelta(seconds=min(max(completion.retry_after, 0.5), 3600)))
        call_patiently(lambda: self.manager.jobs.CompleteLeasedJob(request, timeout=30), control=entry.control)

    def _record(self, job: jobs_pb2.Job, entry: InFlight, completion: Completion) -> None:
        """CompleteLeasedJob; a transient manager error is retried with backoff. If the manager refuses
        the page's record (a bug, or limits out of step), the page fails RECORD_FAILED at once rather
        than being fetched again and again until its lease attempts run out."""
        try:
            self._complete(job, entry, completion)
        except grpc.RpcError as failure:
            code = failure.code()
            if code == grpc.StatusCode.ABORTED or code in TRANSIENT:
                # ABORTED: the lease was lost (cancelled, or expired and taken); transient: the manager is
                # away for over a minute, so nothing can be recorded and the lease decides.
                log.warning("event=complete_failed job_id=%s code=%s detail=%s", job.id, code.name, failure.details())
                return
            log.error("event=record_refused job_id=%s code=%s detail=%s", job.id, code.name, failure.details())
            fallback = Completion(jobs_pb2.JOB_STATUS_FAILED, "RECORD_FAILED",
                                  f"the manager refused this page's record ({code.name}: {failure.details()})")
            if completion.reason != "RECORD_FAILED":  # (if even that is refused, there is nothing smaller)
                self._record(job, entry, fallback)
            return
        except FetchAborted:
            return
        if completion.status == jobs_pb2.JOB_STATUS_FAILED:
            log.info("event=child_failed job_id=%s reason=%s", job.id, completion.reason)


def _decode_and_parse(body: bytes | bytearray, content_type: str) -> tuple[ParsedPage | None, str, bool]:
    text = decode_text(body, content_type)
    del body
    if "html" in content_type.lower():
        parsed = parse_html(text)
        return parsed, parsed.text, parsed.text_truncated
    text, truncated = truncate_utf8(text, MAX_TEXT_BYTES)
    return None, text, truncated


def child_spec(url: str, depth: int) -> jobs_pb2.ChildJobSpec:
    # The name is for people (cut when long); the manager stores a long dedup key as its hash.
    name = url if len(url) <= 256 else url[:255] + "…"
    spec = jobs_pb2.ChildJobSpec(type=CHILD_TYPE, name=name, dedup_key=url, depth=depth)
    dict_to_struct({"url": url, "depth": depth}, spec.config)
    return spec
