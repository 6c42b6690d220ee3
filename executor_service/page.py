"""One leased page, start to verdict: find the credentials through the database (the parent's metadata,
else the definition, else none), fetch, parse, discover links, and record it all in one call.

Every page ends with a verdict, promptly: a document, a failure with a specific reason, or (for a
transient refusal such as robots.txt answering 503) a retry later. Nothing a site sends can leave a
lease to expire: that is left for executors that really died.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2

from quaero import run_plan, tracing
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.convert import cookie_from_proto, dict_to_struct, session_cookie_to_proto, struct_to_dict
from quaero.cookies import StoredCookie
from quaero.cookies.session import SessionCookie
from quaero.crawl_spec import CrawlSpec, Render
from quaero.errors import Reason
from quaero.limits import MAX_TEXT_BYTES, truncate_utf8
from quaero.markers import Markers, compile_markers
from quaero.network_policy import NetworkPolicy
from quaero.patterns import compile_all
from quaero.rpc.channel import TRANSIENT, call_patiently

from .completions import Completions
from .crawl.content import decode_text, is_text
from .crawl.control import Control
from .crawl.cookie_jar import CookieJar
from .crawl.fetcher import DEFAULT_USER_AGENT, Fetcher, FetchPolicy, FetchResult, Validators
from .crawl.links import LinkScope, ParsedPage, parse_html
from .crawl.verdicts import Verdict
from .metrics import FETCH_SECONDS, PAGES
from .parent_reads import ParentReads
from .render.browser import Renderer
from .sessions import RunSession, RunSessions

log = logging.getLogger("quaero.executor.page")
CHILD_TYPE = run_plan.CHILD_TYPE
CREDENTIALS_TTL_SECONDS = 2.0
MAX_PAGE_ATTEMPTS = 4  # a page retried (ROBOTS_UNAVAILABLE, RATE_LIMITED...) fails after this many tries
MAX_SUPERSEDED_FETCHES = 2  # a page sent a session value replaced meanwhile is fetched again this often
SUPERSEDED_RETRY_SECONDS = 0.5  # a page that may have been superseded on another executor is leased again after
SETTLE_SECONDS = 10.0  # at most this long for the fetches in flight beside a logged-out page to end
# Verdicts that say the session a page was sent did not sign it in (it may have been superseded).
SESSION_REFUSED = frozenset({Reason.AUTH_EXPIRED, Reason.AUTH_REJECTED})
PARSE_THREADS = 1  # see PageRunner._read
T = TypeVar("T")


@dataclass
class InFlight:
    """A leased page this process works on: its lease, and the signal that stops its work."""
    job_id: str
    parent_id: str
    token: str
    lease_until: float  # monotonic; past it the manager may give the page to someone else
    control: Control = field(default_factory=Control)
    previous: documents_pb2.PreviousVersion | None = None  # the latest stored version of its URL, if any
    leased_ns: tuple[int, int] = (0, 0)  # when its LeaseJobs call began and ended (tracing on)
    span: Any = None  # the page's span in its run's trace (tracing on, the run traced)


@dataclass
class AuthChoice:
    auth_id: str
    source: str  # "parent metadata", "job definition", or "none"


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
    session_cookies: list[SessionCookie] = field(default_factory=list)  # what its responses set, in order


@dataclass
class Read:
    """A fetched page as read: its body's hash, the parsed HTML (None for other text), the stored text,
    whether that was cut, and the logged_out_marker it matched ('' for none)."""
    content_hash: str
    parsed: ParsedPage | None
    text: str
    truncated: bool
    marker: str = ""


@dataclass(frozen=True)
class RunSettings:
    """What a run's config means for its pages (the crawl spec, its network policy, compiled patterns,
    the link scope), worked out once per config rather than on every page (run_settings)."""
    spec: CrawlSpec
    network: NetworkPolicy
    logged_out: list[Any]
    scope: LinkScope | None  # None when the run names no start URLs: each page's own URL scopes it
    markers: Markers  # logged_out_markers: a login form served in place

    def scope_for(self, url: str) -> LinkScope:
        return self.scope or _link_scope(self.spec, url)


def _link_scope(spec: CrawlSpec, url: str) -> LinkScope:
    return LinkScope(start_urls=list(spec.start_urls or (url,)), same_site_only=spec.same_site_only,
                     include=list(spec.include_patterns), exclude=list(spec.exclude_patterns))


@functools.lru_cache(maxsize=64)
def run_settings(config: bytes) -> RunSettings:
    """RunSettings by a parent's config (its exact serialized bytes): the pages of a run share one."""
    spec = CrawlSpec.from_config(struct_to_dict(struct_pb2.Struct.FromString(config)).get("crawl") or {})
    return RunSettings(spec, spec.network_policy(), compile_all(spec.logged_out_patterns),
                       _link_scope(spec, "") if spec.start_urls else None, compile_markers(spec.logged_out_markers))


class CredentialsCache:
    """Credentials by run and auth_id, kept for a couple of seconds: the children of one run share them, a
    re-import is seen within CREDENTIALS_TTL_SECONDS, and a new run reads them afresh (a run before it may
    have just refreshed them). Which auth_id a child uses is still read from its parent (GetJob) every time."""

    def __init__(self, manager: ManagerClient) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, auth_pb2.Credentials]] = {}

    def get(self, auth_id: str, run_id: str, control: Control) -> auth_pb2.Credentials:
        now = time.monotonic()
        key = (auth_id, run_id)
        with self._lock:
            entry = self._entries.get(key)
        if entry and now - entry[0] < CREDENTIALS_TTL_SECONDS:
            return entry[1]
        credentials = call_patiently(lambda: self._manager.auth.GetCredentials(
            auth_pb2.GetCredentialsRequest(id=auth_id)), wait=control.wait)
        with self._lock:
            self._entries[key] = (now, credentials)
            for stale in [key for key, (at, _c) in self._entries.items() if now - at > CREDENTIALS_TTL_SECONDS]:
                del self._entries[stale]
        return credentials


Gate = Callable[[str, int, Control], AbstractContextManager[bool]]


class PageRunner:
    def __init__(self, manager: ManagerClient, fetcher: Fetcher, gate: Gate, renderer: Renderer | None = None,
                 worker_id: str = "") -> None:
        self.manager = manager
        self.worker_id = worker_id
        self.fetcher = fetcher
        self.renderer = renderer or Renderer(fetcher)  # starts no browser until a page needs one
        self._gate = gate  # holds a run's concurrency slot (see Worker.run_slot)
        self._credentials = CredentialsCache(manager)
        self._parents = ParentReads(self._read_parent)  # (pages of a run asking at once share a read)
        self._parsers = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="parse")
        self.completions = Completions(manager)
        self.sessions = RunSessions()

    def close(self) -> None:
        self._parsers.shutdown(wait=True, cancel_futures=True)
        self.completions.close()
        self.renderer.close()

    def run(self, job: jobs_pb2.Job, entry: InFlight) -> Completion | None:
        """The page's verdict, to be recorded (`record`); None when there is nothing to record (the run
        ended meanwhile); FetchAborted when it was stopped from outside."""
        control = entry.control
        read_began = tracing.now_ns() if tracing.enabled() else 0
        parent = self._parent_of(job, control)
        if read_began:
            entry.span = self._page_span(job, parent, entry, read_began)
        if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
            return None  # cancelled or finished meanwhile; the manager has settled this child already
        settings = run_settings(parent.config.SerializeToString(deterministic=True))
        with tracing.active(entry.span), self._gate(parent.id, settings.spec.concurrency, control) as waited:
            if waited:  # the run may have been cancelled while this page waited for its turn
                parent = self._parent_of(job, control)
                if parent.status != jobs_pb2.JOB_STATUS_RUNNING:
                    return None
            return self._crawl(job, parent, settings, control, entry.previous)

    def _page_span(self, job: jobs_pb2.Job, parent: jobs_pb2.Job, entry: InFlight, read_began: int) -> Any:
        """The page's span in its run's trace (None for a run started untraced): from its lease (the
        LeaseJobs call that brought it) to its record settled. Its steps are attributes (lease and parent
        read: quaero.lease_ms, quaero.parent_read_ms; its record: quaero.record_ms) and its fetch hops events:
        the SDK's cost is per span and per event (~35 µs each, mostly cleaning attributes), and a page's
        steps as spans or events of their own made tracing cost the crawl 8-20% of its CPU."""
        # (Read from the messages as they are: converting the parent's metadata and the page's config to dicts
        # once more per page is what the untraced path would not do.)
        carrier = parent.metadata.fields.get(tracing.TRACE_KEY)
        context = tracing.context_from(None if carrier is None else {
            key: value.string_value for key, value in carrier.struct_value.fields.items()})
        if context is None:
            return None
        leased, read_ended = entry.leased_ns, tracing.now_ns()
        url = job.config.fields.get("url")
        attributes = {"quaero.job_id": job.id, "quaero.run_id": parent.id, "quaero.worker_id": self.worker_id,
                      "url.full": tracing.safe_url(url.string_value if url is not None else ""),
                      "quaero.lease_ms": tracing.milliseconds(*leased),
                      "quaero.parent_read_ms": tracing.milliseconds(read_began, read_ended)}
        if job.attempts > 1:  # (what is usual is left out: every attribute costs the exporter ~5 µs)
            attributes["quaero.attempt"] = job.attempts
        return tracing.start_span("crawl_page", context=context, start_ns=leased[0] or read_began,
                                  attributes=attributes)

    def _parent_of(self, job: jobs_pb2.Job, control: Control) -> jobs_pb2.Job:
        return self._parents.get(job.parent_id, control)  # type: ignore[no-any-return]

    def _read_parent(self, parent_id: str, control: Control) -> jobs_pb2.Job:
        return call_patiently(lambda: self.manager.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id)),
                              wait=control.wait)

    def resolve_auth(self, parent: jobs_pb2.Job, control: Control) -> AuthChoice:
        metadata = struct_to_dict(parent.metadata)
        auth_id = metadata.get("auth_id")
        if isinstance(auth_id, str) and auth_id:
            return AuthChoice(auth_id, "parent metadata")
        definition_id = metadata.get("job_definition_id") or struct_to_dict(parent.config).get("job_definition_id")
        if definition_id:
            try:
                definition = call_patiently(lambda: self.manager.definitions.GetJobDefinition(
                    definitions_pb2.GetJobDefinitionRequest(id=definition_id)), wait=control.wait)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
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
            log.warning("event=job_log_failed job_id=%s code=%s", job_id, error.code().name)  # type: ignore[attr-defined]

    @staticmethod
    def _policy(run_id: str, settings: RunSettings, user_agent: str, auth_id: str) -> FetchPolicy:
        spec = settings.spec
        return FetchPolicy(user_agent=user_agent or DEFAULT_USER_AGENT, timeout=spec.request_timeout_seconds,
                           per_host_delay=spec.per_host_delay_seconds, obey_robots=not spec.ignore_robots_txt,
                           logged_out=settings.logged_out, network=settings.network, run_id=run_id, auth_id=auth_id)

    @staticmethod
    def _validators(previous: documents_pb2.PreviousVersion | None, auth_id: str, spec: CrawlSpec) -> Validators | None:
        """The previous version's validators, when they may be sent: fetched with the same credentials (a
        304 says the page is what it was for the session that fetched it), and not rendered."""
        if previous is None or previous.auth_id != auth_id or spec.render == Render.JS:
            return None
        if not previous.etag and not previous.last_modified:
            return None
        return Validators(previous.final_url, previous.etag, previous.last_modified)

    def _crawl(self, job: jobs_pb2.Job, parent: jobs_pb2.Job, settings: RunSettings, control: Control,
               previous: documents_pb2.PreviousVersion | None = None) -> Completion:
        spec = settings.spec
        config = struct_to_dict(job.config)  # an auth_id in here is deliberately ignored
        url = str(config.get("url", ""))
        depth = int(config.get("depth", job.depth))
        choice = self.resolve_auth(parent, control)
        cookies: list[StoredCookie] = []
        user_agent = spec.user_agent
        if choice.source == "none":
            self._log(job.id, jobs_pb2.LOG_LEVEL_WARNING, "no auth_id in the parent's metadata or its job "
                      "definition: crawling without cookies (logged out)")
        else:
            if choice.source != "parent metadata":
                self._log(job.id, jobs_pb2.LOG_LEVEL_WARNING, f"parent metadata has no auth_id; using auth_id "
                          f"{choice.auth_id!r} from the {choice.source}")
            try:
                credentials = self._credentials.get(choice.auth_id, parent.id, control)
            except grpc.RpcError as error:
                missing = error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
                return Completion(jobs_pb2.JOB_STATUS_FAILED,
                                  Reason.AUTH_NOT_FOUND if missing else Reason.CREDENTIALS_UNAVAILABLE,
                                  f"cannot load credentials {choice.auth_id!r}: {error.details()}")  # type: ignore[attr-defined]
            cookies = [cookie_from_proto(c) for c in credentials.cookies]
            user_agent = user_agent or credentials.user_agent
        policy = self._policy(parent.id, settings, user_agent, choice.auth_id)
        validators = self._validators(previous, choice.auth_id, spec)
        session = self.sessions.get(parent.id)
        set_by_page: list[SessionCookie] = []
        for fetches in range(1, MAX_SUPERSEDED_FETCHES + 2):
            try:
                # The page starts from the session as it is when its turn at the host comes.
                with session.fetching(url):
                    start_cookies, generation = session.cookies(cookies)
                    jar = CookieJar(start_cookies, on_commit=session.absorb)
                    if start_cookies and jar.all_expired_for(url):
                        return Completion(jobs_pb2.JOB_STATUS_FAILED, Reason.AUTH_EXPIRED, f"not authenticated: "
                                          f"every stored cookie for {url} has expired; import fresh cookies")
                    started = time.perf_counter()
                    if spec.render == Render.JS:
                        page = self.renderer.render(url, jar, start_cookies, policy, control)
                    else:
                        page = self.fetcher.fetch(url, jar, policy, control, validators)
                    read = self._read(page, settings.markers)
                    if read.marker:
                        jar.discard_hop()  # (a login form's cookies are not the run's session)
                        raise Verdict(Reason.AUTH_EXPIRED, f"not authenticated: {page.final_url} is a login form "
                                      f"served in place (logged_out_markers {read.marker!r} matched); import fresh "
                                      "cookies")
                    jar.commit_hop()
            except Verdict as verdict:
                set_by_page += jar.changes
                FETCH_SECONDS.labels(verdict.reason).observe(time.perf_counter() - started)
                if self._superseded(verdict, session, generation, url, fetches, policy.timeout):
                    continue
                if (verdict.reason in SESSION_REFUSED and session.sets_cookies_for(url)
                        and job.attempts < MAX_PAGE_ATTEMPTS):
                    # The site changes its session during this run, and another executor's page may have
                    # just replaced the value this one was sent (this executor cannot see that yet): the page
                    # goes back, and its next lease brings the run's newest session.
                    return Completion(jobs_pb2.JOB_STATUS_PENDING, Reason.SESSION_SUPERSEDED,
                                      f"{verdict} while the run's session was changing; fetched again with its newest "
                                      f"session (attempt {job.attempts} of {MAX_PAGE_ATTEMPTS})",
                                      retry_after=SUPERSEDED_RETRY_SECONDS, session_cookies=set_by_page)
                ended = self._verdict(job, url, verdict)
                ended.session_cookies = set_by_page
                if fetches > 1:
                    ended.result["fetches"] = fetches
                return ended
            set_by_page += jar.changes
            break
        FETCH_SECONDS.labels("fetched").observe(time.perf_counter() - started)
        log.debug("event=page_fetched job_id=%s status=%d hops=%d body_bytes=%d", job.id, page.status_code,
                  len(page.hops), len(page.body))
        stored = self._stored(job, url, depth, page, read, settings, policy, choice, bool(start_cookies),
                              previous if page.not_modified else None)
        stored.session_cookies = set_by_page
        if fetches > 1:
            stored.result["fetches"] = fetches  # (superseded: fetched again with the newest session)
        return stored

    @staticmethod
    def _superseded(verdict: Verdict, session: RunSession, generation: int, url: str, fetches: int,
                    timeout: float) -> bool:
        """The page ended logged out although its session changed while it was in flight (another page's
        response replaced the value it was sent with): it is fetched again with the newest session. The
        pages of the host that were in flight with it end first: the answer that replaced the value may
        be one of theirs, still on its way."""
        if verdict.reason not in SESSION_REFUSED:
            return False
        session.settle(url, min(timeout, SETTLE_SECONDS))
        if not session.changed_since(generation, url):
            return False
        session.superseded(url)
        log.info("event=page_superseded run=%s fetches=%d", session.parent_id, fetches)
        return fetches <= MAX_SUPERSEDED_FETCHES

    @staticmethod
    def _verdict(job: jobs_pb2.Job, url: str, verdict: Verdict) -> Completion:
        if verdict.reason == Reason.ROBOTS_DISALLOWED:
            # Obeying robots.txt is not a failure of the crawl: the page is skipped, and says so.
            return Completion(jobs_pb2.JOB_STATUS_COMPLETED, result={"url": url, "skipped": str(verdict)})
        if verdict.retry_after is not None:
            if job.attempts < MAX_PAGE_ATTEMPTS:
                return Completion(jobs_pb2.JOB_STATUS_PENDING, verdict.reason, f"{verdict} (attempt {job.attempts} "
                                  f"of {MAX_PAGE_ATTEMPTS})", retry_after=verdict.retry_after)
            return Completion(jobs_pb2.JOB_STATUS_FAILED, verdict.reason,
                              f"{verdict}; gave up after {job.attempts} attempts")
        return Completion(jobs_pb2.JOB_STATUS_FAILED, verdict.reason, str(verdict))

    def _stored(self, job: jobs_pb2.Job, url: str, depth: int, page: FetchResult, read: Read, settings: RunSettings,
                policy: FetchPolicy, choice: AuthChoice, cookies_sent: bool,
                unchanged: documents_pb2.PreviousVersion | None = None) -> Completion:
        """The page's record. `unchanged`: the site answered 304 to that stored version's validators; the
        document refers to its content, and its stored links are followed."""
        content_hash, parsed, text, truncated = read.content_hash, read.parsed, read.text, read.truncated
        scope = settings.scope_for(url)
        dropped = parsed.links_dropped if parsed else 0
        links: list[str] = []
        if unchanged is not None:
            links, _over = scope.follow(unchanged.links, page.final_url)
            document = documents_pb2.Document(
                url=url, final_url=page.final_url, status_code=page.status_code, content_type=page.content_type,
                content_hash=unchanged.content_hash, not_modified=True, previous_document_id=unchanged.document_id,
                etag=page.etag or unchanged.etag, last_modified=page.last_modified or unchanged.last_modified)
        else:
            if parsed:
                links, over = scope.follow(parsed.links, page.final_url)
                dropped += over
            document = documents_pb2.Document(
                url=url, final_url=page.final_url, title=parsed.title if parsed else "", text=text,
                text_truncated=truncated, content_hash=content_hash, status_code=page.status_code,
                content_type=page.content_type, etag=page.etag, last_modified=page.last_modified, links=links)
        document.auth_id = choice.auth_id
        children: list[jobs_pb2.ChildJobSpec] = []
        spec = settings.spec
        if depth < spec.max_depth:
            for link in links:
                # robots.txt as already known (no request here): a host not asked yet gets a child,
                # which asks it itself; a slow robots.txt elsewhere must not hold up this page.
                if not policy.obey_robots or self.fetcher.robots_cached(link) is not False:
                    children.append(child_spec(link, depth + 1))
        result: dict[str, Any] = {
            "url": url, "final_url": page.final_url, "status_code": page.status_code, "links_found": len(children),
            "authenticated_with": choice.source, "cookies_sent": cookies_sent}
        if unchanged is not None:
            result["not_modified"] = True
        if truncated:
            result["text_truncated"] = True
        if dropped:
            result["links_dropped"] = dropped
        result.update(page.notes)
        if page.refused_cookies:
            result["refused_cookies"] = [{"name": name, "reason": reason[:300]} for name, reason in page.refused_cookies]
        return Completion(jobs_pb2.JOB_STATUS_COMPLETED, result=result, document=document, children=children,
                          max_children=spec.max_pages)

    def _read(self, page: FetchResult, markers: Markers) -> Read:
        """The page decoded, parsed and checked for logged_out_markers. Decoding and parsing take several
        times a body's size in memory (libxml2's state for deeply nested tags: ~5x) and hold the GIL
        anyway, so they run on a thread of their own rather than on every crawl thread: the C allocator
        keeps what a thread freed for that thread, and 16 crawl threads each keeping a big page's worth
        held 490 MiB; one parser thread holds at most one (README, "Limits")."""
        content_hash = hashlib.sha256(page.body).hexdigest()
        if not is_text(page.content_type):
            page.body = b""
            return Read(content_hash, None, "", False)
        body, page.body = page.body, b""
        parsed, text, truncated, marker = self._parsers.submit(_decode_and_parse, body, page.content_type,
                                                               markers).result()
        return Read(content_hash, parsed, text, truncated, marker)

    def record(self, job: jobs_pb2.Job, entry: InFlight, completion: Completion, finished: Callable[[], None]) -> None:
        """Hands the page's record over (it is sent in a batch with others: Completions) and returns;
        `finished` is called once it is settled. A transient manager error is retried with backoff. If
        the manager refuses the record (a bug, or limits out of step), the page fails RECORD_FAILED at
        once rather than being fetched again and again until its lease attempts run out."""
        request = jobs_pb2.CompleteLeasedJobRequest(
            job_id=job.id, lease_token=entry.token, status=completion.status, error=completion.error,
            error_reason=completion.reason, children=completion.children, max_children=completion.max_children)
        dict_to_struct(completion.result, request.result)
        if completion.document is not None:
            request.document.CopyFrom(completion.document)
        for item in completion.session_cookies:
            session_cookie_to_proto(item, request.session_cookies)
        if completion.status == jobs_pb2.JOB_STATUS_PENDING:
            request.retry_after.FromTimedelta(timedelta(seconds=min(max(completion.retry_after, 0.5), 3600)))

        handed_over = tracing.now_ns() if entry.span is not None else 0

        def settled(failure: BaseException | None) -> None:
            if failure is None:
                PAGES.labels(completion.reason or "OK", jobs_pb2.JobStatus.Name(completion.status)).inc()
                if completion.status == jobs_pb2.JOB_STATUS_FAILED:
                    log.info("event=child_failed job_id=%s reason=%s", job.id, completion.reason)
            elif isinstance(failure, grpc.RpcError):
                code = failure.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.ABORTED or code in TRANSIENT:
                    # ABORTED: the lease was lost (cancelled, or expired and taken); transient: the manager
                    # is away for over a minute, so nothing can be recorded and the lease decides.
                    log.warning("event=complete_failed job_id=%s code=%s detail=%s", job.id, code.name,
                                failure.details())  # type: ignore[attr-defined]
                else:
                    log.error("event=record_refused job_id=%s code=%s detail=%s", job.id, code.name,
                              failure.details())  # type: ignore[attr-defined]
                    if completion.reason != Reason.RECORD_FAILED:  # (if even that is refused, nothing is smaller)
                        self.record(job, entry, Completion(
                            jobs_pb2.JOB_STATUS_FAILED, Reason.RECORD_FAILED,
                            f"the manager refused this page's record ({code.name}: {failure.details()})"),  # type: ignore[attr-defined]
                            finished)
                        return
            if entry.span is not None:  # (record_ms: its way to the manager, queued, batched, sent, answered)
                ended: dict[str, Any] = {"quaero.status": jobs_pb2.JobStatus.Name(completion.status),
                                         "quaero.record_ms": tracing.milliseconds(handed_over, tracing.now_ns())}
                if completion.reason:
                    ended["quaero.error_reason"] = completion.reason
                if failure is not None:
                    ended["quaero.recorded"] = False
                entry.span.set_attributes(ended)
                entry.span.end()
            finished()

        self.completions.submit(request, settled)


def _decode_and_parse(body: bytes | bytearray, content_type: str,
                      markers: Markers) -> tuple[ParsedPage | None, str, bool, str]:
    text = decode_text(body, content_type)
    del body
    if "html" in content_type.lower():
        parsed = parse_html(text)
        marker = markers.match(parsed.text, text) if markers else ""
        return parsed, parsed.text, parsed.text_truncated, marker
    text, truncated = truncate_utf8(text, MAX_TEXT_BYTES)
    return None, text, truncated, markers.match(text, None) if markers else ""


def child_spec(url: str, depth: int) -> jobs_pb2.ChildJobSpec:
    child = run_plan.page(url, depth)
    spec = jobs_pb2.ChildJobSpec(type=child["type"], name=child["name"], dedup_key=child["dedup_key"], depth=depth)
    dict_to_struct(child["config"], spec.config)
    return spec
