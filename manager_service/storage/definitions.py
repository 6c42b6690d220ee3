"""Crawl job definitions: checked when stored (quaero.crawl_spec), so a run never starts from a broken
definition."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from quaero.crawl_spec import CrawlSpec, Definition, RunPolicy
from quaero.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Reason
from quaero.ids import check_definition_id
from quaero.schedules import Schedule

from .clock import Clock
from .credentials import CredentialStore
from .db import Database
from .models import job_definitions, schedule_ticks
from .paging import Listing, PageTokens, page_request
from .records import version_of


@dataclass(frozen=True)
class StoredDefinition:
    definition: Definition
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def etag(self) -> str:
        return str(self.version)

    @classmethod
    def from_row(cls, row: Any) -> StoredDefinition:
        stored = row["spec"]
        try:
            policy = RunPolicy.from_mapping(stored)
        except InvalidArgument:
            policy = RunPolicy()
        try:
            schedule = Schedule.from_mapping(stored["schedule"]) if stored.get("schedule") else None
        except InvalidArgument:  # (checked when stored: only a hand-edited row gets here)
            schedule = None
        definition = Definition(id=row["id"], name=row["name"], type=row["type"], auth_id=row["auth_id"],
                                spec=CrawlSpec.from_config(stored.get("crawl") or {}), policy=policy,
                                schedule=schedule)
        return cls(definition, row["created_at"], row["updated_at"], row["version"])


class DefinitionStore:
    def __init__(self, db: Database, credentials: CredentialStore, clock: Clock, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens
        self.credentials = credentials
        self.clock = clock

    def _check_auth(self, definition: Definition) -> None:
        if definition.auth_id and not self.credentials.exists(definition.auth_id, "job_definition.auth_id"):
            raise FailedPrecondition(Reason.AUTH_NOT_FOUND, f"auth_id {definition.auth_id!r} names no stored "
                                     "credentials; import them first (`quaero auth import`)",
                                     "job_definition.auth_id", {"auth_id": definition.auth_id})

    def create(self, data: dict[str, Any]) -> StoredDefinition:
        definition = Definition.from_mapping(data)
        self._check_auth(definition)
        definition = replace(definition, id=definition.id or str(uuid.uuid4()))
        stamp = self.clock.now()
        try:
            with self.db.write_engine.begin() as conn:
                conn.execute(sa.insert(job_definitions).values({**_row(definition), "created_at": stamp,
                                                                "updated_at": stamp}))
        except sa.exc.IntegrityError:
            raise AlreadyExists(Reason.DEFINITION_EXISTS, f"a job definition with id {definition.id!r} exists; "
                                "update it instead", "job_definition.id") from None
        return self.get(definition.id)

    def update(self, data: dict[str, Any], allow_missing: bool, etag: str = "") -> StoredDefinition:
        """Replaces a definition; with an etag, only if it is still the version that etag names."""
        definition = Definition.from_mapping(data)
        if not definition.id:
            raise InvalidArgument(Reason.INVALID_DEFINITION, "id is required to update a definition",
                                  "job_definition.id")
        self._check_auth(definition)
        stamp = self.clock.now()
        with self.db.write_engine.begin() as conn:
            statement = sa.update(job_definitions).where(job_definitions.c.id == definition.id)
            if etag:
                statement = statement.where(job_definitions.c.version == _version(etag))
            updated = conn.execute(statement.values({**_row(definition), "updated_at": stamp,
                                                     "version": job_definitions.c.version + 1}))
            if not updated.rowcount:
                current = conn.execute(sa.select(job_definitions.c.version)
                                       .where(job_definitions.c.id == definition.id)).scalar()
                if current is not None:
                    raise _stale(definition.id, etag, current, "job_definition.etag")
                if etag or not allow_missing:
                    raise NotFound(Reason.DEFINITION_NOT_FOUND, f"no job definition has id {definition.id!r}",
                                   "job_definition.id")
                conn.execute(sa.insert(job_definitions).values({**_row(definition), "created_at": stamp,
                                                                "updated_at": stamp}))
        return self.get(definition.id)

    def get(self, definition_id: str) -> StoredDefinition:
        check_definition_id(definition_id)
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(job_definitions).where(job_definitions.c.id == definition_id)).mappings().first()
        if row is None:
            raise NotFound(Reason.DEFINITION_NOT_FOUND, f"no job definition has id {definition_id!r} "
                           "(see `quaero definitions ls`)", "id", {"definition_id": definition_id})
        return StoredDefinition.from_row(row)

    def list_page(self, page_size: int, page_token: str) -> Listing[StoredDefinition]:
        """By id."""
        scope = "ListJobDefinitions"
        page = page_request(self.tokens, page_size, page_token, scope)
        query = sa.select(job_definitions)
        if page.after is not None:
            query = query.where(job_definitions.c.id > page.after[0])
        with self.db.read_engine.connect() as conn:
            rows = [StoredDefinition.from_row(row) for row in conn.execute(
                query.order_by(job_definitions.c.id).limit(page.limit)).mappings()]
        return Listing(rows, page.size, lambda item: self.tokens.make(scope, [item.definition.id]))

    def delete(self, definition_id: str, etag: str = "") -> None:
        check_definition_id(definition_id)
        with self.db.write_engine.begin() as conn:
            statement = sa.delete(job_definitions).where(job_definitions.c.id == definition_id)
            if etag:
                statement = statement.where(job_definitions.c.version == _version(etag))
            deleted = conn.execute(statement)
            if not deleted.rowcount:
                current = conn.execute(sa.select(job_definitions.c.version)
                                       .where(job_definitions.c.id == definition_id)).scalar()
                if current is not None:
                    raise _stale(definition_id, etag, current, "etag")
                raise NotFound(Reason.DEFINITION_NOT_FOUND, f"no job definition has id {definition_id!r}", "id")
            # Its schedule's ticks go with it (a definition made again with this id starts from its creation).
            conn.execute(sa.delete(schedule_ticks).where(schedule_ticks.c.definition_id == definition_id))


def _version(etag: str) -> int:
    version = version_of(etag)
    return version if version is not None else -1


def _stale(definition_id: str, etag: str, current: int, field: str) -> Aborted:
    return Aborted(Reason.ETAG_MISMATCH, f"job definition {definition_id!r} changed since etag {etag!r} was read "
                   f"(now {current}); read it again and retry", field, {"definition_id": definition_id,
                                                                       "etag": str(current)})


def _row(definition: Definition) -> dict[str, Any]:
    return {"id": definition.id, "name": definition.name, "type": definition.type, "auth_id": definition.auth_id,
            "spec": {"crawl": definition.spec.to_mapping(), **definition.policy.to_mapping(),
                     **({"schedule": definition.schedule.to_mapping()} if definition.schedule is not None else {})}}
