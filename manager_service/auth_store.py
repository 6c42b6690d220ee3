"""Stored site credentials: cookies encrypted at rest, an index of everything but the values."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from . import paging
from .cookies import (
    MAX_COOKIES_PER_DOMAIN,
    MAX_COOKIES_PER_JAR,
    StoredCookie,
    canonical_domain,
    canonical_site,
    clamp_expiry,
    is_public_suffix,
    registrable_domain,
    rejection_reason,
)
from .db import Database
from .errors import InvalidArgument, NotFound
from .jobs_store import now
from .models import credentials
from .secretbox import SecretBox

CREDENTIALS_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
USER_AGENT = re.compile(r"[\x20-\x7e]{0,512}")


def check_user_agent(user_agent: str, field: str) -> None:
    """A User-Agent goes into a request header: printable ASCII, at most 512 characters."""
    if USER_AGENT.fullmatch(user_agent) is None:
        raise InvalidArgument("INVALID_USER_AGENT", f"{field} must be printable ASCII of at most 512 characters "
                              "(it is sent as a header)", field)


def _cookie_to_json(cookie: StoredCookie) -> dict[str, Any]:
    data = asdict(cookie)
    data["expires"] = cookie.expires.isoformat() if cookie.expires else None
    return data


def _cookie_from_json(data: dict[str, Any]) -> StoredCookie:
    expires = datetime.fromisoformat(data["expires"]) if data.get("expires") else None
    return StoredCookie(**{**data, "expires": expires})


def _index_entry(cookie: StoredCookie) -> dict[str, Any]:
    entry = _cookie_to_json(cookie)
    del entry["value"], entry["extra"]
    return entry


class AuthStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def put(self, credentials_id: str, site_domain: str, base_url: str, user_agent: str,
            cookies: list[StoredCookie]) -> tuple[RowMapping, list[tuple[StoredCookie, str]]]:
        site = canonical_site(site_domain)
        if not site:
            raise InvalidArgument("MISSING_SITE_DOMAIN", "site_domain is required (e.g. example.com)", "site_domain")
        if is_public_suffix(site):
            raise InvalidArgument("INVALID_SITE_DOMAIN", f"site_domain {site!r} is a public suffix, shared by "
                                  "unrelated sites; give the site's own domain (e.g. example.com)", "site_domain")
        if credentials_id and not CREDENTIALS_ID.fullmatch(credentials_id):
            raise InvalidArgument("INVALID_CREDENTIALS_ID",
                                  "id may hold only letters, digits, '.', '-' and '_' (at most 64)", "id")
        check_user_agent(user_agent, "user_agent")
        accepted: list[StoredCookie] = []
        rejected: list[tuple[StoredCookie, str]] = []
        per_domain: dict[str, int] = {}
        stamp = now()
        for cookie in cookies:
            cookie.domain = canonical_domain(cookie.domain or site)
            cookie.path = cookie.path or "/"
            cookie.expires = clamp_expiry(cookie.expires, stamp)
            reason = rejection_reason(cookie, site)
            key = registrable_domain(cookie.domain)
            if reason is None and per_domain.get(key, 0) >= MAX_COOKIES_PER_DOMAIN:
                reason = f"cookie {cookie.name[:64]!r}: more than {MAX_COOKIES_PER_DOMAIN} cookies for {key}"
            if reason is None and len(accepted) >= MAX_COOKIES_PER_JAR:
                reason = f"cookie {cookie.name[:64]!r}: more than {MAX_COOKIES_PER_JAR} cookies in one set"
            if reason:
                rejected.append((cookie, reason))
            else:
                per_domain[key] = per_domain.get(key, 0) + 1
                accepted.append(cookie)
        if not accepted:
            detail = "; ".join(reason for _, reason in rejected[:5]) or "no cookies were given"
            raise InvalidArgument("NO_VALID_COOKIES", f"no cookie can be stored: {detail}", "cookies")
        credentials_id = credentials_id or str(uuid.uuid4())
        plaintext = json.dumps([_cookie_to_json(c) for c in accepted]).encode()
        values = {
            "site_domain": site, "base_url": base_url, "user_agent": user_agent,
            "cookies_encrypted": self.box.seal(plaintext, credentials_id),
            "cookie_index": [_index_entry(c) for c in accepted], "updated_at": stamp,
        }
        with self.db.write_engine.begin() as conn:
            updated = conn.execute(sa.update(credentials).where(credentials.c.id == credentials_id).values(values))
            if not updated.rowcount:
                conn.execute(sa.insert(credentials).values(id=credentials_id, created_at=stamp, **values))
            row = conn.execute(sa.select(credentials).where(credentials.c.id == credentials_id)).mappings().one()
        return row, rejected

    def info(self, credentials_id: str) -> RowMapping:
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(credentials).where(credentials.c.id == credentials_id)).mappings().first()
        if row is None:
            raise NotFound("CREDENTIALS_NOT_FOUND", f"no stored credentials have id {credentials_id!r} "
                           "(see `quaero auth ls`)", "id", {"auth_id": credentials_id})
        return row

    def exists(self, credentials_id: str) -> bool:
        with self.db.read_engine.connect() as conn:
            return conn.execute(sa.select(credentials.c.id).where(credentials.c.id == credentials_id)).first() is not None

    def get(self, credentials_id: str) -> tuple[RowMapping, list[StoredCookie]]:
        row = self.info(credentials_id)
        plaintext = self.box.open(row["cookies_encrypted"], credentials_id)
        return row, [_cookie_from_json(item) for item in json.loads(plaintext)]

    def list_page(self, page_size: int, page_token: str) -> tuple[list[RowMapping], str]:
        size = paging.page_size(page_size, 50)
        offset = paging.offset(page_token)
        with self.db.read_engine.connect() as conn:
            rows = list(conn.execute(sa.select(credentials).order_by(credentials.c.created_at, credentials.c.id)
                                     .offset(offset).limit(size + 1)).mappings())
        return rows[:size], (str(offset + size) if len(rows) > size else "")

    def delete(self, credentials_id: str) -> None:
        with self.db.write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(credentials).where(credentials.c.id == credentials_id))
        if not deleted.rowcount:
            raise NotFound("CREDENTIALS_NOT_FOUND", f"no stored credentials have id {credentials_id!r}", "id",
                           {"auth_id": credentials_id})
