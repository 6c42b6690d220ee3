"""The services in this process, on loopback, for tests: a manager on SQLite (a file) or PostgreSQL, an
executor, local sites, and the steps of a crawl (credentials, a definition, a run, its outcome).

This module is the top layer: it starts both services, so it imports them (nothing in the services
or the rest of quaero imports it).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..api.executor.v1 import executor_pb2
from ..api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from ..client import ExecutorClient, ManagerClient
from ..convert import job_status, to_timestamp
from .site import Response, Routes, SiteServer

# The sites of a test run on loopback, which a crawl may reach only when its definition says so.
LOCAL_SITES = "127.0.0.1/32"


@dataclass
class RunningManager:
    server: Any  # manager_service.server.ManagerServer
    address: str
    token: str  # the operator token
    client: ManagerClient  # with the operator token
    data_dir: Path
    executor_token: str = ""

    def connect(self, token: str | None = None) -> ManagerClient:
        return ManagerClient.connect(self.address, token if token is not None else self.token)

    def connect_as_executor(self) -> ManagerClient:
        """A client with the executor token: leases, cookie values (close it when done)."""
        return ManagerClient.connect(self.address, self.executor_token)

    @property
    def faults(self) -> Any:
        """The fault injector (QUAERO_FAULT_INJECT set when the manager started), to reconfigure."""
        return self.server.service.faults

    def close(self) -> None:
        self.client.close()
        self.server.stop(grace=0.5)


def start_manager(data_dir: Path, database_url: str | None = None, token: str | None = None,
                  clock: Any = None, faults: str = "", executor_token: str | None = None) -> RunningManager:
    """A manager in this process on a free loopback port; SQLite in data_dir unless database_url says.
    `token` is the operator token, `executor_token` the executor's (both made up when not given)."""
    from manager_service.config import ManagerSettings
    from manager_service.server import ManagerServer
    from manager_service.storage.clock import SYSTEM
    from quaero.config import Tokens

    data_dir.mkdir(parents=True, exist_ok=True)
    token = token or "test-" + secrets.token_hex(8)
    executor_token = executor_token or "test-executor-" + secrets.token_hex(8)
    settings = ManagerSettings(data_dir=data_dir, database_url=database_url or f"sqlite:///{data_dir / 'quaero.db'}",
                               tokens=Tokens(token, executor_token), faults=faults)
    server = ManagerServer(settings, "127.0.0.1:0", clock=clock or SYSTEM)
    address = f"127.0.0.1:{server.start()}"
    return RunningManager(server, address, token, ManagerClient.connect(address, token), data_dir, executor_token)


@dataclass
class RunOutcome:
    parent: jobs_pb2.Job
    children: list[jobs_pb2.Job]
    documents: list[documents_pb2.Document]
    logs: list[jobs_pb2.JobLog] = field(default_factory=list)

    def document(self, url: str) -> documents_pb2.Document | None:
        return next((d for d in self.documents if d.url == url), None)

    def child(self, url: str) -> jobs_pb2.Job:
        return next(c for c in self.children if c.name == url)


def cookie(name: str, value: str, domain: str, *, include_subdomains: bool = False, path: str = "/",
           secure: bool = False, expires: datetime | None = None) -> auth_pb2.Cookie:
    message = auth_pb2.Cookie(name=name, value=value, domain=domain, include_subdomains=include_subdomains, path=path,
                              secure=secure)
    to_timestamp(expires, message.expire_time)
    return message


class CrawlHarness:
    """An executor in this process beside `manager`, and the steps of a crawl. Sites made with site()
    and the executor stop with close(). `resolve` maps test host names to addresses (QUAERO_RESOLVE)."""

    def __init__(self, manager: RunningManager, workers: int = 4, resolve: dict[str, str] | None = None,
                 ca_bundle: str | None = None, lease_seconds: float = 30.0) -> None:
        from executor_service.config import ExecutorSettings
        from executor_service.server import ExecutorServer

        self.manager = manager
        self.client = manager.client
        self.executor = ExecutorServer(ExecutorSettings(
            listen="127.0.0.1:0", manager=manager.address, token=manager.token,
            manager_token=manager.executor_token, workers=workers,
            lease_seconds=lease_seconds, resolve=dict(resolve or {}), ca_bundle=ca_bundle))
        self.executor_address = f"127.0.0.1:{self.executor.start()}"
        self.executor_client = ExecutorClient.connect(self.executor_address, manager.token)
        self.executor_stub = self.executor_client.executor
        # The manager as the executor sees it (executor token): leases, cookie values.
        self.as_executor = manager.connect_as_executor()
        self.sites: list[SiteServer] = []
        self._definitions = 0

    def close(self) -> None:
        self.executor_client.close()
        self.as_executor.close()
        self.executor.stop(grace=0)
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
        """A definition of these start URLs; options are CrawlConfig fields or JobDefinition fields. Unless
        they say otherwise, the crawl may reach LOCAL_SITES (the test sites) and goes 3 deep."""
        self._definitions += 1
        crawl_keys = {f.name for f in definitions_pb2.CrawlConfig.DESCRIPTOR.fields}
        crawl = definitions_pb2.CrawlConfig(start_urls=start_urls,
                                            **{k: v for k, v in options.items() if k in crawl_keys})
        if "max_depth" not in options:
            crawl.max_depth = 3
        if "allowed_networks" not in options and "allow_private_networks" not in options:
            crawl.allowed_networks.append(LOCAL_SITES)
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
            job = self.client.get_job(parent_id)
            if job_status(job.status).terminal:
                return job
            time.sleep(0.02)
        raise TimeoutError(f"run {parent_id} did not finish in {timeout} s")

    def outcome(self, parent_id: str) -> RunOutcome:
        parent = self.wait(parent_id)
        children = list(self.client.iter_children(parent_id))
        documents = list(self.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=parent_id, page_size=1000)).documents)
        logs = list(self.client.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(
            job_id=parent_id, page_size=1000, include_children=True)).logs)
        return RunOutcome(parent, children, documents, logs)

    def crawl(self, start_urls: list[str], auth_id: str = "", **options: Any) -> RunOutcome:
        return self.outcome(self.start(self.definition(start_urls, auth_id, **options)).parent_job_id)


__all__ = ["LOCAL_SITES", "CrawlHarness", "Response", "RunOutcome", "RunningManager", "cookie", "start_manager"]
