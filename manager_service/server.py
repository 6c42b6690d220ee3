"""Assembles the manager: database, stores, servicers, the gRPC server, housekeeping."""
from __future__ import annotations

import contextlib
import logging
import threading
import time

import grpc

from quaero.api.manager.v1 import auth_pb2_grpc, definitions_pb2_grpc, documents_pb2_grpc, jobs_pb2_grpc
from quaero.cookies.rules import load_public_suffixes_in_background
from quaero.metrics import serve_metrics
from quaero.rpc.interceptors import ExceptionToStatus
from quaero.rpc.pool import WorkerPool
from quaero.rpc.roles import Role
from quaero.rpc.server import banner, build_server, serve_until_signalled

from .access import MANAGER_ACCESS
from .config import ManagerSettings
from .metrics import LEASES_EXPIRED, PENDING_CHILDREN, SCHEDULE_NEXT_FIRE, SCHEDULE_TICKS, WATCHERS
from .pg_changes import ChangeListener, ChangePublisher
from .servicers.credentials import AuthStoreServicer
from .servicers.definitions import JobDefinitionsServicer
from .servicers.documents import DocumentsServicer
from .servicers.jobs import JobManagerServicer, job_to_proto
from .storage import Stores
from .storage.clock import SYSTEM, Clock, ManualClock
from .storage.db import connect, migrate, unavailable_for
from .storage.secretbox import SecretBox, load_key
from .watch import WatchHub
from .watch_streams import WatchStreams

log = logging.getLogger("quaero.manager")
SERVICE_NAMES = ("quaero.manager.v1.JobManager", "quaero.manager.v1.AuthStore",
                 "quaero.manager.v1.JobDefinitions", "quaero.manager.v1.Documents")
HOUSEKEEPING_SECONDS = 1.0
VACUUM_CHECK_SECONDS = 15.0  # how often housekeeping looks whether PostgreSQL needs a vacuum from us
PRUNE_SECONDS = 60.0  # how often housekeeping deletes runs past their definitions' retention
# A call that met a dropped or locked database runs again after each pause (SQLAlchemy replaces the
# pool's dead connections); UNAVAILABLE only when these are spent.
DATABASE_RETRY_PAUSES = (0.05, 0.25, 1.0)


class ManagerServer:
    def __init__(self, settings: ManagerSettings, listen: str, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.db = connect(settings.database_url)
        migrate(self.db)
        self.stores = stores = Stores.open(self.db, SecretBox(load_key(settings.data_dir, settings.secret_key)), clock)
        stores.retention.default_keep_runs = settings.keep_runs
        self.hub = WatchHub(stores.jobs.read_many)
        stores.notifier.subscribe(self.hub.changed)
        self.streams = WatchStreams(self.hub, job_to_proto)
        WATCHERS.set_function(lambda: self.hub.watchers)
        PENDING_CHILDREN.set_function(stores.jobs.pending_children)
        # Several managers on one PostgreSQL: the others' changes arrive by LISTEN/NOTIFY.
        self.listener: ChangeListener | None = None
        self.publisher: ChangePublisher | None = None
        if self.db.dialect == "postgresql":
            self.listener = ChangeListener(settings.database_url, self.db.instance, self.hub)
            self.publisher = ChangePublisher(self.db.read_engine.raw_connection, self.db.instance)
            stores.notifier.subscribe(self.publisher.changed)
        self._stopping = threading.Event()
        # SQLite calls hold the GIL nearly throughout: two threads keep both cores busy. PostgreSQL
        # calls wait on the network, so more threads overlap those waits.
        pool = WorkerPool(settings.rpc_workers or (2 if self.db.dialect == "sqlite" else 4))

        def register(server: grpc.Server) -> tuple[str, ...]:
            jobs_pb2_grpc.add_JobManagerServicer_to_server(
                JobManagerServicer(stores.jobs, stores.leases, self.streams, caller=self._caller_role,
                                   retention=stores.retention), server)
            auth_pb2_grpc.add_AuthStoreServicer_to_server(AuthStoreServicer(stores.credentials), server)
            definitions_pb2_grpc.add_JobDefinitionsServicer_to_server(JobDefinitionsServicer(stores.definitions),
                                                                      server)
            documents_pb2_grpc.add_DocumentsServicer_to_server(DocumentsServicer(stores.documents), server)
            return SERVICE_NAMES

        # A database that dropped the connection is UNAVAILABLE (retry), not INTERNAL.
        if settings.tokens.operator == settings.tokens.executor:
            raise ValueError("the operator token and the executor token are the same; give them different values "
                             "(QUAERO_API_TOKEN, QUAERO_EXECUTOR_TOKEN)")
        tokens = {settings.tokens.operator: Role.OPERATOR, settings.tokens.executor: Role.EXECUTOR}
        self.service = build_server(register, tokens=tokens, access=MANAGER_ACCESS, listen=listen, pool=pool,
                                    errors=ExceptionToStatus(translate=unavailable_for,
                                                             retry_translated=DATABASE_RETRY_PAUSES), tls=settings.tls,
                                    faults=settings.faults)
        self.port = self.service.port
        self._housekeeping = threading.Thread(target=self._keep_house, name="housekeeping", daemon=True)

    def _caller_role(self, context: grpc.ServicerContext) -> str:
        return str(self.service.auth.role_of(context.invocation_metadata()) or "")

    def start(self) -> int:
        load_public_suffixes_in_background()  # (the credential checks use it)
        if self.listener is not None:
            self.listener.start()
        if self.publisher is not None:
            self.publisher.start()
        self.service.start()
        self._housekeeping.start()
        self.service.mark_serving()
        return self.port

    def _keep_house(self) -> None:
        # Returns the pages of executors that died to pending within about a second of their lease's
        # expiry, checkpoints SQLite's WAL off the request path, and vacuums PostgreSQL if nothing else does.
        vacuum_due = time.monotonic() + VACUUM_CHECK_SECONDS
        prune_due = time.monotonic() + PRUNE_SECONDS
        while not self._stopping.wait(HOUSEKEEPING_SECONDS):
            self.keep_house()
            self.fire_schedules()
            if time.monotonic() >= vacuum_due:
                vacuum_due = time.monotonic() + VACUUM_CHECK_SECONDS
                self.vacuum()
            if time.monotonic() >= prune_due:
                prune_due = time.monotonic() + PRUNE_SECONDS
                self.prune()

    def fire_schedules(self) -> None:
        """Starts the runs of due schedule ticks (every manager looks; the database lets one act on a tick)."""
        try:
            now, scheduler = self.stores.clock.now(), self.stores.scheduler
            scheduled = scheduler.scheduled()
            for outcome in scheduler.fire_due(now, scheduled):
                SCHEDULE_TICKS.labels(outcome.definition_id, outcome.status).inc(outcome.count)
            for stored in scheduled:
                fires = scheduler.next_fires(stored.definition, now)
                if fires:
                    SCHEDULE_NEXT_FIRE.labels(stored.definition.id).set(fires[0].timestamp())
                else:
                    with contextlib.suppress(KeyError):
                        SCHEDULE_NEXT_FIRE.remove(stored.definition.id)
        except Exception as error:  # a database hiccup must not kill the housekeeping
            log.warning("event=schedules_failed error=%s", type(error).__name__)

    def prune(self) -> None:
        try:
            self.stores.scheduler.forget_old_ticks(self.stores.clock.now())
            deleted = self.stores.retention.prune(self.stores.clock.now())
            if deleted.runs:
                log.info("event=pruned runs=%d jobs=%d documents=%d contents=%d", len(deleted.runs), deleted.jobs,
                         deleted.documents, deleted.contents)
        except Exception as error:  # a database hiccup must not kill the housekeeping
            log.warning("event=prune_failed error=%s", type(error).__name__)

    def vacuum(self) -> None:
        try:
            started = time.monotonic()
            vacuumed = self.db.vacuum_if_needed()
            if vacuumed:
                log.info("event=vacuumed tables=%s seconds=%.2f why=autovacuum_off", ",".join(vacuumed),
                         time.monotonic() - started)
        except Exception as error:  # a database hiccup must not kill the housekeeping
            log.warning("event=vacuum_failed error=%s", type(error).__name__)

    def keep_house(self) -> None:
        try:
            expired = self.stores.leases.expire()
            if expired:
                LEASES_EXPIRED.inc(expired)
                log.warning("event=leases_expired count=%d", expired)
            self.db.checkpoint()
        except Exception as error:  # a database hiccup must not kill the housekeeping
            log.warning("event=housekeeping_failed error=%s", type(error).__name__)

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self.streams.stop()
        self.hub.stop()
        if self.listener is not None:
            self.listener.stop()
        self.service.stop(grace)
        if self.publisher is not None:
            self.publisher.stop()
        self.db.dispose()


def serve(listen: str, metrics_listen: str = "") -> None:
    settings = ManagerSettings.from_env()
    clock: Clock = SYSTEM
    if settings.clock_offset:
        clock = ManualClock()
        clock.advance(settings.clock_offset)
        log.warning("event=clock_offset seconds=%g why=QUAERO_CLOCK_OFFSET_SECONDS", settings.clock_offset)
    manager = ManagerServer(settings, listen, clock=clock)
    port = manager.start()
    database = settings.database_url.split("://", 1)[0]
    details = f"database: {database}, data: {settings.data_dir}"
    if metrics_listen:
        details += f", metrics: http://{metrics_listen.rsplit(':', 1)[0]}:{serve_metrics(metrics_listen)}/metrics"
    serve_until_signalled(banner("quaero-manager", listen, port, details), manager.stop, manager.service.running)
