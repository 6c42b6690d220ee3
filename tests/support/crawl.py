"""Run crawls through the real services: an in-process manager and executor on loopback, real HTTP
sites answering for test host names (resolved by the executor's QUAERO_RESOLVE-style map)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from executor_service.demo.site import Request, Response, SiteServer
from executor_service.server import ExecutorServer
from manager_service.convert import to_timestamp
from manager_service.grpc_common import open_channel
from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2

HOSTS = ["app.site.test", "sub.app.site.test", "other.site.test", "site.test", "evil.test", "app.site.test.evil.test",
         "notapp.site.test", "offsite.example.test", "app.site.test."]
# rebind.site.test is the site's own name, pointing at another loopback address (as DNS rebinding would).
RESOLVE = {**{host: "127.0.0.1" for host in HOSTS}, "rebind.site.test": "127.0.0.2"}
# The sites run on loopback, which a crawl may reach only when its definition says so.
LOCAL_SITES = "127.0.0.1/32"
TERMINAL = {jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED}


def html(title: str, *links: str, body: str = "") -> Response:
    anchors = " ".join(f'<a href="{link}">{link}</a>' for link in links)
    return Response(body=f"<html><head><title>{title}</title></head><body><p>{body or title}</p>{anchors}</body></html>")


class Routes:
    """A site keyed by (host, path); unknown paths are 404, robots.txt allows everything by default."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[Request], Response] | Response]) -> None:
        self.routes = routes

    def __call__(self, request: Request) -> Response:
        handler = self.routes.get((request.host, request.path)) or self.routes.get(("*", request.path))
        if handler is None:
            if request.path == "/robots.txt":
                return Response(body="User-agent: *\nAllow: /\n", content_type="text/plain")
            return Response(status=404, body="<html><title>missing</title></html>")
        return handler(request) if callable(handler) else handler


def cookie(name: str, value: str, domain: str, *, host_only: bool = True, path: str = "/", secure: bool = False,
           expires: datetime | None = None) -> auth_pb2.Cookie:
    message = auth_pb2.Cookie(name=name, value=value, domain=domain, host_only=host_only, path=path, secure=secure)
    to_timestamp(expires, message.expire_time)
    return message


@dataclass
class CrawlOutcome:
    parent: jobs_pb2.Job
    children: list[jobs_pb2.Job]
    documents: list[documents_pb2.Document]
    logs: list[jobs_pb2.JobLog] = field(default_factory=list)

    def document(self, url: str) -> documents_pb2.Document | None:
        return next((d for d in self.documents if d.url == url), None)

    def child(self, url: str) -> jobs_pb2.Job:
        return next(c for c in self.children if c.name == url)


class CrawlHarness:
    def __init__(self, manager: Any, workers: int = 4, ca_bundle: str | None = None) -> None:
        self.manager = manager
        self.client = manager.client
        self.executor = ExecutorServer("127.0.0.1:0", manager.address, manager.token, workers=workers,
                                       resolve=RESOLVE, ca_bundle=ca_bundle)
        self.executor_address = f"127.0.0.1:{self.executor.start()}"
        self.channel = open_channel(self.executor_address, manager.token, default_timeout=30)
        self.executor_stub = executor_pb2_grpc.ExecutorStub(self.channel)
        self.sites: list[SiteServer] = []
        self._definitions = 0

    def close(self) -> None:
        self.channel.close()
        self.executor.stop(grace=1)
        for site in self.sites:
            site.stop()

    def site(self, routes: dict[tuple[str, str], Any], tls: Any = None, host: str = "127.0.0.1") -> SiteServer:
        server = SiteServer(Routes(routes), tls=tls, host=host).start()
        self.sites.append(server)
        return server

    def credentials(self, cookies: Iterable[auth_pb2.Cookie], auth_id: str = "", site: str = "app.site.test") -> str:
        info = self.client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(
            id=auth_id, site_domain=site, base_url=f"http://{site}/", cookies=list(cookies)))
        return info.id

    def definition(self, start_urls: list[str], auth_id: str = "", **options: Any) -> str:
        self._definitions += 1
        crawl_keys = {f.name for f in definitions_pb2.CrawlConfig.DESCRIPTOR.fields}
        crawl = definitions_pb2.CrawlConfig(start_urls=start_urls,
                                            **{k: v for k, v in options.items() if k in crawl_keys})
        if "max_depth" not in options:
            crawl.max_depth = 3
        if "allowed_networks" not in options and "allow_private_networks" not in options:
            crawl.allowed_networks.append(LOCAL_SITES)  # the test sites' address, and only that
        top = {k: v for k, v in options.items() if k not in crawl_keys}
        definition = definitions_pb2.JobDefinition(id=f"def-{time.monotonic_ns()}-{self._definitions}", name="test",
                                                   auth_id=auth_id, crawl=crawl, **top)
        return self.client.definitions.CreateJobDefinition(
            definitions_pb2.CreateJobDefinitionRequest(job_definition=definition)).id

    def start(self, definition_id: str, request_id: str = "") -> executor_pb2.ExecuteJobDefinitionResponse:
        return self.executor_stub.ExecuteJobDefinition(executor_pb2.ExecuteJobDefinitionRequest(
            definition_id=definition_id, request_id=request_id))

    def wait(self, parent_id: str, timeout: float = 60) -> jobs_pb2.Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
            if job.status in TERMINAL:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"run {parent_id} did not finish in {timeout} s")

    def outcome(self, parent_id: str) -> CrawlOutcome:
        parent = self.wait(parent_id)
        children = list(self.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent_id, page_size=1000)).jobs)
        documents = list(self.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=parent_id, page_size=1000)).documents)
        logs = list(self.client.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(
            job_id=parent_id, page_size=1000, include_children=True)).logs)
        return CrawlOutcome(parent, children, documents, logs)

    def crawl(self, start_urls: list[str], auth_id: str = "", **options: Any) -> CrawlOutcome:
        return self.outcome(self.start(self.definition(start_urls, auth_id, **options)).parent_job_id)
