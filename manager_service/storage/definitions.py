"""Crawl job definitions: checked when stored (quaero.crawl_spec), so a run never starts from a broken
definition."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from quaero.crawl_spec import CrawlSpec, Definition, RunPolicy
from quaero.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Reason
from quaero.ids import check_definition_id

from .clock import Clock
from .credentials import CredentialStore
from .db import Database
from .models import job_definitions
from .paging import Page


@dataclass(frozen=True)
class StoredDefinition:
    definition: Definition
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> StoredDefinition:
        stored = row["spec"]
        try:
            policy = RunPolicy.from_mapping(stored)
        except InvalidArgument:
            policy = RunPolicy()
        definition = Definition(id=row["id"], name=row["name"], type=row["type"], auth_id=row["auth_id"],
                                spec=CrawlSpec.from_config(stored.get("crawl") or {}), policy=policy)
        return cls(definition, row["created_at"], row["updated_at"])


class DefinitionStore:
    def __init__(self, db: Database, credentials: CredentialStore, clock: Clock) -> None:
        self.db = db
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

    def update(self, data: dict[str, Any], allow_missing: bool) -> StoredDefinition:
        definition = Definition.from_mapping(data)
        if not definition.id:
            raise InvalidArgument(Reason.INVALID_DEFINITION, "id is required to update a definition",
                                  "job_definition.id")
        self._check_auth(definition)
        stamp = self.clock.now()
        with self.db.write_engine.begin() as conn:
            updated = conn.execute(sa.update(job_definitions).where(job_definitions.c.id == definition.id)
                                   .values({**_row(definition), "updated_at": stamp}))
            if not updated.rowcount:
                if not allow_missing:
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

    def list_page(self, page_size: int, page_token: str) -> tuple[list[StoredDefinition], str]:
        page = Page.parse(page_size, page_token)
        with self.db.read_engine.connect() as conn:
            rows = [StoredDefinition.from_row(row) for row in conn.execute(
                sa.select(job_definitions).order_by(job_definitions.c.id).offset(page.after)
                .limit(page.limit)).mappings()]
        return page.cut(rows)

    def delete(self, definition_id: str) -> None:
        check_definition_id(definition_id)
        with self.db.write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(job_definitions).where(job_definitions.c.id == definition_id))
        if not deleted.rowcount:
            raise NotFound(Reason.DEFINITION_NOT_FOUND, f"no job definition has id {definition_id!r}", "id")


def _row(definition: Definition) -> dict[str, Any]:
    return {"id": definition.id, "name": definition.name, "type": definition.type, "auth_id": definition.auth_id,
            "spec": {"crawl": definition.spec.to_mapping(), **definition.policy.to_mapping()}}
