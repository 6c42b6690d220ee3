"""Crawl job definitions: validated when stored, so a run never starts from a broken definition."""
from __future__ import annotations

import math
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from . import paging
from .auth_store import USER_AGENT, AuthStore
from .db import Database
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .jobs_store import now
from .models import job_definitions
from .network_policy import MAX_ALLOWED_NETWORKS, NetworkPolicy, parse_networks
from .patterns import MAX_PATTERNS, compile_pattern
from .urls import MAX_URL_LENGTH, has_credentials, normalise_url

DEFINITION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
CRAWL_DEFAULTS: dict[str, Any] = {
    "max_depth": 3, "max_pages": 1000, "same_site_only": True, "concurrency": 8,
    "per_host_delay_seconds": 0.0, "request_timeout_seconds": 30.0,
}
# (lowest, highest) for the numbers of a crawl; a delay or timeout must also be finite.
CRAWL_RANGES: dict[str, tuple[float, float]] = {
    "max_depth": (0, 1000), "max_pages": (1, 10_000_000), "concurrency": (1, 256),
    "per_host_delay_seconds": (0, 60), "request_timeout_seconds": (0.1, 300),
}
PATTERN_FIELDS = ("include_patterns", "exclude_patterns", "logged_out_patterns")
MAX_START_URLS = 1000
FAILURE_ACTIONS = ("continue", "stop_all")


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidArgument("INVALID_DEFINITION", message, f"job_definition.{field}")


def _check_number(crawl: dict[str, Any], key: str) -> None:
    low, high = CRAWL_RANGES[key]
    value = crawl[key]
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
             and low <= value <= high, f"crawl.{key}", f"crawl.{key} must be a number from {low:g} to {high:g}")


def _check_start_url(url: Any, index: int, policy: NetworkPolicy) -> str:
    field = f"crawl.start_urls[{index}]"
    _require(isinstance(url, str), field, f"{field} must be a string")
    # Never echoed back: the URL may hold a password.
    _require(not has_credentials(url), field, f"{field} holds a user name or password (user:password@); the crawl "
             "never sends them: remove them and give the session as credentials (auth_id)")
    parts = urlsplit(url.strip())
    _require(parts.scheme.lower() in ("http", "https") and bool(parts.hostname), field,
             f"start URL {url[:200]!r} is not an absolute http(s) URL")
    normal = normalise_url(url)
    _require(normal is not None, field, f"start URL {url[:200]!r} cannot be crawled (a bad host or port, or longer "
             f"than {MAX_URL_LENGTH} characters)")
    assert normal is not None
    refused = policy.host_refusal(urlsplit(normal).hostname or "")
    article = "an" if (refused or "")[:1] in "aeiou" else "a"
    _require(refused is None, field, f"start URL {normal[:200]!r} is on {article} {refused} address; a crawl reaches only "
             "public addresses unless the definition allows more (crawl.allow_private_networks = true, or "
             "crawl.allowed_networks = [\"10.0.0.0/8\"])")
    return normal


def normalise(definition: dict[str, Any]) -> dict[str, Any]:
    """Checks a definition and fills in defaults; raises InvalidArgument naming the field at fault."""
    crawl = {key: value for key, value in dict(definition.get("crawl") or {}).items() if value is not None}
    for key, value in CRAWL_DEFAULTS.items():
        crawl.setdefault(key, value)
    kind = definition.get("type") or "crawler"
    _require(kind == "crawler", "type", f"type {kind!r} is not supported; the only type is 'crawler'")
    for key in CRAWL_RANGES:
        _check_number(crawl, key)
    networks = list(crawl.get("allowed_networks") or [])
    _require(len(networks) <= MAX_ALLOWED_NETWORKS, "crawl.allowed_networks",
             f"crawl.allowed_networks holds more than {MAX_ALLOWED_NETWORKS} networks")
    try:
        parsed_networks = parse_networks(networks)
    except ValueError as error:
        raise InvalidArgument("INVALID_DEFINITION", f"crawl.allowed_networks{error}",
                              "job_definition.crawl.allowed_networks") from None
    crawl["allowed_networks"] = [str(network) for network in parsed_networks]
    crawl["allow_private_networks"] = bool(crawl.get("allow_private_networks"))
    policy = NetworkPolicy(crawl["allow_private_networks"], parsed_networks)
    start_urls = list(crawl.get("start_urls") or [])
    _require(bool(start_urls), "crawl.start_urls", "crawl.start_urls needs at least one http(s) URL")
    _require(len(start_urls) <= MAX_START_URLS, "crawl.start_urls",
             f"crawl.start_urls holds more than {MAX_START_URLS} URLs")
    crawl["start_urls"] = [_check_start_url(url, index, policy) for index, url in enumerate(start_urls)]
    for key in PATTERN_FIELDS:
        patterns = list(crawl.get(key) or [])
        _require(len(patterns) <= MAX_PATTERNS, f"crawl.{key}", f"crawl.{key} holds more than {MAX_PATTERNS} patterns")
        for index, pattern in enumerate(patterns):
            try:
                compile_pattern(pattern)
            except ValueError as error:
                raise InvalidArgument("INVALID_DEFINITION", f"crawl.{key}[{index}] {pattern[:200]!r}: {error}",
                                      f"job_definition.crawl.{key}[{index}]") from None
    _require(USER_AGENT.fullmatch(str(crawl.get("user_agent") or "")) is not None, "crawl.user_agent",
             "crawl.user_agent must be printable ASCII of at most 512 characters (it is sent as a header)")
    failures = int(definition.get("max_child_failures") or 0)
    _require(failures >= 0, "max_child_failures", "max_child_failures cannot be negative")
    action = definition.get("failure_action") or "continue"
    _require(action in FAILURE_ACTIONS, "failure_action", "failure_action must be stop_all or continue")
    definition_id = definition.get("id") or ""
    _require(not definition_id or bool(DEFINITION_ID.fullmatch(definition_id)), "id",
             "id may hold only letters, digits, '-' and '_' (at most 128), starting with a letter or digit")
    return {
        "id": definition_id, "name": definition.get("name") or definition_id, "type": kind,
        "auth_id": definition.get("auth_id") or "", "crawl": crawl,
        "max_child_failures": failures, "failure_action": action,
    }


class DefinitionStore:
    def __init__(self, db: Database, auth: AuthStore) -> None:
        self.db = db
        self.auth = auth

    def _check_auth(self, definition: dict[str, Any]) -> None:
        auth_id = definition["auth_id"]
        if auth_id and not self.auth.exists(auth_id):
            raise FailedPrecondition("AUTH_NOT_FOUND", f"auth_id {auth_id!r} names no stored credentials; import "
                                     "them first (`quaero auth import`)", "job_definition.auth_id",
                                     {"auth_id": auth_id})

    def create(self, definition: dict[str, Any]) -> dict[str, Any]:
        definition = normalise(definition)
        self._check_auth(definition)
        definition["id"] = definition["id"] or str(uuid.uuid4())
        stamp = now()
        try:
            with self.db.write_engine.begin() as conn:
                conn.execute(sa.insert(job_definitions).values({**_row(definition), "created_at": stamp, "updated_at": stamp}))
        except sa.exc.IntegrityError:
            raise AlreadyExists("DEFINITION_EXISTS", f"a job definition with id {definition['id']!r} exists; "
                                "update it instead", "job_definition.id") from None
        return self.get(definition["id"])

    def update(self, definition: dict[str, Any], allow_missing: bool) -> dict[str, Any]:
        definition = normalise(definition)
        _require(bool(definition["id"]), "id", "id is required to update a definition")
        self._check_auth(definition)
        stamp = now()
        with self.db.write_engine.begin() as conn:
            updated = conn.execute(sa.update(job_definitions).where(job_definitions.c.id == definition["id"])
                                   .values({**_row(definition), "updated_at": stamp}))
            if not updated.rowcount:
                if not allow_missing:
                    raise NotFound("DEFINITION_NOT_FOUND", f"no job definition has id {definition['id']!r}",
                                   "job_definition.id")
                conn.execute(sa.insert(job_definitions).values({**_row(definition), "created_at": stamp, "updated_at": stamp}))
        return self.get(definition["id"])

    def get(self, definition_id: str) -> dict[str, Any]:
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(job_definitions).where(job_definitions.c.id == definition_id)).mappings().first()
        if row is None:
            raise NotFound("DEFINITION_NOT_FOUND", f"no job definition has id {definition_id!r} "
                           "(see `quaero definitions ls`)", "id", {"definition_id": definition_id})
        return _definition(row)

    def list_page(self, page_size: int, page_token: str) -> tuple[list[dict[str, Any]], str]:
        size = paging.page_size(page_size, 50)
        offset = paging.offset(page_token)
        with self.db.read_engine.connect() as conn:
            rows = list(conn.execute(sa.select(job_definitions).order_by(job_definitions.c.id)
                                     .offset(offset).limit(size + 1)).mappings())
        return [_definition(r) for r in rows[:size]], (str(offset + size) if len(rows) > size else "")

    def delete(self, definition_id: str) -> None:
        with self.db.write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(job_definitions).where(job_definitions.c.id == definition_id))
        if not deleted.rowcount:
            raise NotFound("DEFINITION_NOT_FOUND", f"no job definition has id {definition_id!r}", "id")


def _row(definition: dict[str, Any]) -> dict[str, Any]:
    spec = {k: definition[k] for k in ("crawl", "max_child_failures", "failure_action")}
    return {"id": definition["id"], "name": definition["name"], "type": definition["type"],
            "auth_id": definition["auth_id"], "spec": spec}


def _definition(row: RowMapping) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "type": row["type"], "auth_id": row["auth_id"],
            **row["spec"], "created_at": row["created_at"], "updated_at": row["updated_at"]}
