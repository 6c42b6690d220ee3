"""The manager's storage: SQL only (SQLAlchemy), no gRPC and no generated code. Stores(db) is the bundle
the server builds; each store is one concern."""
from __future__ import annotations

from dataclasses import dataclass

from ..notifier import ChangeNotifier
from .clock import SYSTEM, Clock
from .credentials import CredentialStore
from .db import Database
from .definitions import DefinitionStore
from .documents import DocumentStore
from .job_rows import JobRows
from .jobs import JobStore
from .jobs_sql import JobsSql
from .leases import LeaseQueue
from .lifecycle import Lifecycle
from .paging import PageTokens
from .retention import Retention
from .schedules import Scheduler
from .secretbox import SecretBox
from .sessions import SessionStore


@dataclass
class Stores:
    db: Database
    jobs: JobStore
    leases: LeaseQueue
    credentials: CredentialStore
    definitions: DefinitionStore
    documents: DocumentStore
    notifier: ChangeNotifier
    clock: Clock
    retention: Retention
    scheduler: Scheduler

    @classmethod
    def open(cls, db: Database, box: SecretBox, clock: Clock = SYSTEM) -> Stores:
        notifier = ChangeNotifier()
        rows = JobRows(clock, JobsSql(db))
        lifecycle = Lifecycle(rows)
        tokens = PageTokens(box.derived_key("page tokens"))
        documents = DocumentStore(db, tokens)
        credentials = CredentialStore(db, box, clock, tokens)
        return cls(db=db, jobs=JobStore(db, rows, lifecycle, notifier, tokens),
                   retention=Retention(db, rows, lifecycle, documents.index, notifier),
                   scheduler=Scheduler(db, rows, lifecycle, credentials, notifier, db.instance),
                   leases=LeaseQueue(db, rows, lifecycle, documents, notifier, SessionStore(db, box)),
                   credentials=credentials,
                   definitions=DefinitionStore(db, credentials, clock, tokens), documents=documents, notifier=notifier,
                   clock=clock)
