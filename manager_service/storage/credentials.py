"""Stored site credentials: cookies encrypted at rest, an index of everything but the values. The
cookie rules (quaero.cookies) are applied here, for every client."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from quaero.cookies import (
    MAX_COOKIE_SET_BYTES,
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
from quaero.crawl_spec import USER_AGENT
from quaero.errors import InvalidArgument, NotFound, Reason
from quaero.ids import check_credentials_id

from .clock import Clock
from .db import Database
from .models import credentials
from .paging import Listing, PageTokens, keyset_page, page_request, stamp
from .records import check_text
from .secretbox import SecretBox

MAX_BASE_URL_CHARS = 2048


@dataclass(frozen=True)
class Credentials:
    """A credentials record without cookie values (`cookies` holds them only when asked for)."""
    id: str
    site_domain: str
    base_url: str
    user_agent: str
    index: list[dict[str, Any]]  # every cookie but its value
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime | None = None  # when a crawl's response last refreshed a cookie (sessions.py)
    refreshed_by: str | None = None  # that run
    cookies: list[StoredCookie] = field(default_factory=list)
    rejected: list[tuple[StoredCookie, str]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Any) -> Credentials:
        return cls(row["id"], row["site_domain"], row["base_url"], row["user_agent"], list(row["cookie_index"]),
                   row["created_at"], row["updated_at"], row["refreshed_at"], row["refreshed_by"])


def sealed_cookies(box: SecretBox, credentials_id: str, cookies: list[StoredCookie]) -> dict[str, Any]:
    """A credentials row's cookie columns: the values sealed (bound to the id), the index without them."""
    return {"cookies_encrypted": box.seal(json.dumps([c.to_json() for c in cookies]).encode(), credentials_id),
            "cookie_index": [c.index_entry() for c in cookies]}


def opened_cookies(box: SecretBox, credentials_id: str, row: Any) -> list[StoredCookie]:
    """The cookies of a credentials row, values included: the only place they are decrypted."""
    return [StoredCookie.from_json(item) for item in json.loads(box.open(row["cookies_encrypted"], credentials_id))]


class CredentialStore:
    def __init__(self, db: Database, box: SecretBox, clock: Clock, tokens: PageTokens | None = None) -> None:
        self.db = db
        self.tokens = tokens or PageTokens(box.derived_key("page tokens"))
        self.box = box
        self.clock = clock

    def put(self, credentials_id: str, site_domain: str, base_url: str, user_agent: str,
            cookies: list[StoredCookie]) -> Credentials:
        site = canonical_site(site_domain)
        if not site:
            raise InvalidArgument(Reason.MISSING_SITE_DOMAIN, "site_domain is required (e.g. example.com)",
                                  "site_domain")
        if is_public_suffix(site):
            raise InvalidArgument(Reason.INVALID_SITE_DOMAIN, f"site_domain {site!r} is a public suffix, shared by "
                                  "unrelated sites; give the site's own domain (e.g. example.com)", "site_domain")
        if credentials_id:
            check_credentials_id(credentials_id)
        check_text(base_url, "base_url", MAX_BASE_URL_CHARS)
        if USER_AGENT.fullmatch(user_agent) is None:
            raise InvalidArgument(Reason.INVALID_USER_AGENT, "user_agent must be printable ASCII of at most 512 "
                                  "characters (it is sent as a header)", "user_agent")
        stamp = self.clock.now()
        accepted, rejected = self._sorted(cookies, site, stamp)
        if not accepted:
            detail = "; ".join(reason for _, reason in rejected[:5]) or "no cookies were given"
            raise InvalidArgument(Reason.NO_VALID_COOKIES, f"no cookie can be stored: {detail}", "cookies")
        credentials_id = credentials_id or str(uuid.uuid4())
        values = {"site_domain": site, "base_url": base_url, "user_agent": user_agent,
                  **sealed_cookies(self.box, credentials_id, accepted), "updated_at": stamp}
        with self.db.write_engine.begin() as conn:
            updated = conn.execute(sa.update(credentials).where(credentials.c.id == credentials_id).values(values))
            if not updated.rowcount:
                conn.execute(sa.insert(credentials).values(id=credentials_id, created_at=stamp, **values))
            row = conn.execute(sa.select(credentials).where(credentials.c.id == credentials_id)).mappings().one()
        stored = Credentials.from_row(row)
        return Credentials(**{**stored.__dict__, "rejected": rejected})

    @staticmethod
    def _sorted(cookies: list[StoredCookie], site: str,
                stamp: datetime) -> tuple[list[StoredCookie], list[tuple[StoredCookie, str]]]:
        """(the cookies that may be stored, [(cookie, why not)] for the others)."""
        accepted: list[StoredCookie] = []
        rejected: list[tuple[StoredCookie, str]] = []
        per_domain: dict[str, int] = {}
        total = 0
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
            size = len(cookie.name) + len(cookie.value) + len(cookie.domain) + len(cookie.path)
            if reason is None and total + size > MAX_COOKIE_SET_BYTES:
                reason = f"cookie {cookie.name[:64]!r}: more than {MAX_COOKIE_SET_BYTES // 1024} KiB of cookies in one set"
            if reason:
                rejected.append((cookie, reason))
            else:
                per_domain[key] = per_domain.get(key, 0) + 1
                total += size
                accepted.append(cookie)
        return accepted, rejected

    def info(self, credentials_id: str, field: str = "id") -> Credentials:
        check_credentials_id(credentials_id, field)
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(credentials).where(credentials.c.id == credentials_id)).mappings().first()
        if row is None:
            raise NotFound(Reason.CREDENTIALS_NOT_FOUND, f"no stored credentials have id {credentials_id!r} "
                           "(see `quaero auth ls`)", "id", {"auth_id": credentials_id})
        return Credentials.from_row(row)

    def exists(self, credentials_id: str, field: str = "id") -> bool:
        check_credentials_id(credentials_id, field)
        with self.db.read_engine.connect() as conn:
            return conn.execute(sa.select(credentials.c.id).where(credentials.c.id == credentials_id)).first() is not None

    def get(self, credentials_id: str) -> Credentials:
        """With the cookie values: the only read that decrypts them."""
        check_credentials_id(credentials_id)
        with self.db.read_engine.connect() as conn:
            row = conn.execute(sa.select(credentials).where(credentials.c.id == credentials_id)).mappings().first()
        if row is None:
            raise NotFound(Reason.CREDENTIALS_NOT_FOUND, f"no stored credentials have id {credentials_id!r} "
                           "(see `quaero auth ls`)", "id", {"auth_id": credentials_id})
        cookies = opened_cookies(self.box, credentials_id, row)
        stored = Credentials.from_row(row)
        return Credentials(**{**stored.__dict__, "cookies": cookies})

    def list_page(self, page_size: int, page_token: str) -> Listing[Credentials]:
        """Oldest first, by (created_at, id)."""
        scope = "ListCredentials"
        page = page_request(self.tokens, page_size, page_token, scope)
        query = keyset_page(sa.select(credentials), credentials.c.created_at, credentials.c.id, page,
                            newest_first=False)
        with self.db.read_engine.connect() as conn:
            rows = [Credentials.from_row(row) for row in conn.execute(query).mappings()]
        return Listing(rows, page.size, lambda item: self.tokens.make(scope, [stamp(item.created_at), item.id]))

    def delete(self, credentials_id: str) -> None:
        check_credentials_id(credentials_id)
        with self.db.write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(credentials).where(credentials.c.id == credentials_id))
        if not deleted.rowcount:
            raise NotFound(Reason.CREDENTIALS_NOT_FOUND, f"no stored credentials have id {credentials_id!r}", "id",
                           {"auth_id": credentials_id})
