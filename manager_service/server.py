"""Assembles the manager: database, stores, servicers, gRPC server, lease reaper."""
from __future__ import annotations

import logging
import os
import threading

import grpc

from quaero.api.manager.v1 import auth_pb2_grpc, definitions_pb2_grpc, documents_pb2_grpc, jobs_pb2_grpc

from .auth_store import AuthStore
from .config import ManagerSettings
from .db import Database, connect, migrate, unavailable_for
from .definitions_store import DefinitionStore
from .documents_store import DocumentStore
from .grpc_common import ERROR_TRANSLATORS, WorkerPool, build_server, mark_serving, serve_until_signalled
from .jobs_store import JobStore
from .secretbox import SecretBox, load_key
from .servicers.auth import AuthStoreServicer
from .servicers.definitions import JobDefinitionsServicer
from .servicers.documents import DocumentsServicer
from .servicers.jobs import JobManagerServicer

log = logging.getLogger("quaero.manager")
SERVICE_NAMES = ("quaero.manager.v1.JobManager", "quaero.manager.v1.AuthStore",
                 "quaero.manager.v1.JobDefinitions", "quaero.manager.v1.Documents")
LEASE_REAPER_SECONDS = 1.0


class ManagerServer:
    def __init__(self, settings: ManagerSettings, listen: str) -> None:
        self.settings = settings
        if unavailable_for not in ERROR_TRANSLATORS:
            ERROR_TRANSLATORS.append(unavailable_for)
        self.db: Database = connect(settings.database_url)
        migrate(self.db)
        self.jobs = JobStore(self.db)
        self.auth = AuthStore(self.db, SecretBox(load_key(settings.data_dir)))
        self.definitions = DefinitionStore(self.db, self.auth)
        self.documents = DocumentStore(self.db)
        self._stopping = threading.Event()
        # SQLite calls hold the GIL nearly throughout: two threads keep both cores busy. PostgreSQL
        # calls wait on the network, so more threads overlap those waits.
        default_workers = "2" if self.db.dialect == "sqlite" else "4"
        pool = WorkerPool(int(os.environ.get("QUAERO_RPC_WORKERS", default_workers)))

        def register(server: grpc.Server) -> tuple[str, ...]:
            jobs_pb2_grpc.add_JobManagerServicer_to_server(JobManagerServicer(self.jobs, pool.idle), server)
            auth_pb2_grpc.add_AuthStoreServicer_to_server(AuthStoreServicer(self.auth), server)
            definitions_pb2_grpc.add_JobDefinitionsServicer_to_server(JobDefinitionsServicer(self.definitions), server)
            documents_pb2_grpc.add_DocumentsServicer_to_server(DocumentsServicer(self.documents), server)
            return SERVICE_NAMES

        self.server, self.health, self.port = build_server(register, settings.api_token, listen, pool=pool)
        self._reaper = threading.Thread(target=self._reap_leases, name="housekeeping", daemon=True)

    def start(self) -> int:
        self.server.start()
        self._reaper.start()
        mark_serving(self.health, SERVICE_NAMES)
        return self.port

    def _reap_leases(self) -> None:
        # Returns the jobs of executors that died to pending within about a second of expiry, and
        # checkpoints SQLite's WAL off the request path.
        while not self._stopping.wait(LEASE_REAPER_SECONDS):
            try:
                expired = self.jobs.expire_leases()
                if expired:
                    log.warning("event=leases_expired count=%d", expired)
                self.db.checkpoint()
            except Exception as error:  # a database hiccup must not kill the housekeeping
                log.warning("event=housekeeping_failed error=%s", type(error).__name__)

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.db.dispose()


def serve(listen: str) -> None:
    settings = ManagerSettings.from_env()
    manager = ManagerServer(settings, listen)
    port = manager.start()
    host = listen.rsplit(":", 1)[0]
    database = settings.database_url.split("://", 1)[0]
    serve_until_signalled(f"quaero-manager serving on {host}:{port} (database: {database}, data: {settings.data_dir})",
                          manager.stop)
