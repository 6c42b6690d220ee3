"""Run sessions: the cookies a run's responses set, kept where every executor sees them, and the refresh of
the stored credentials they came from. Values are sealed as credentials' are (AES-GCM, one cookie a
row); nothing here is ever listed to the operator role. Knows nothing of gRPC.

A page's record carries the cookies its responses set (`record`, inside the record's transaction); a lease
carries the sessions of the leased jobs' runs that the executor does not hold in their newest version
(`newer_than`). So the session costs no call of its own, and a site that sets no cookies costs one small
read per lease."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from quaero.cookies import StoredCookie, canonical_domain, clamp_expiry
from quaero.cookies.session import (
    MAX_RUN_SESSION_BYTES,
    MAX_RUN_SESSION_COOKIES,
    MAX_SESSION_COOKIES_PER_PAGE,
    SessionCookie,
    key_of,
    newest_per_key,
    session_cookie_problem,
)
from quaero.errors import InvalidArgument, Reason

from .clock import aware
from .credentials import opened_cookies, sealed_cookies
from .db import Database
from .models import credentials, run_cookies, run_sessions
from .records import Job
from .secretbox import SecretBox

EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass
class RunSession:
    parent_id: str
    version: int
    cookies: list[SessionCookie]


def check_session_cookies(cookies: Sequence[SessionCookie], field: str) -> None:
    """InvalidArgument, naming the cookie's place, for a cookie no browser would have kept."""
    if len(cookies) > MAX_SESSION_COOKIES_PER_PAGE:
        raise InvalidArgument(Reason.INVALID_VALUE, f"at most {MAX_SESSION_COOKIES_PER_PAGE} session cookies per page",
                              field)
    for index, item in enumerate(cookies):
        item.cookie.domain = canonical_domain(item.cookie.domain)
        item.cookie.path = item.cookie.path or "/"
        problem = session_cookie_problem(item)
        if problem is not None:
            raise InvalidArgument(Reason.INVALID_VALUE, problem, f"{field}[{index}]")


class SessionStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    # ---- a page's record ------------------------------------------------------------------------
    def record(self, conn: Connection, parent: Job, cookies: Sequence[SessionCookie], stamp: datetime) -> None:
        """The cookies join the run's session (a later `set_at` wins a key), and the run's credentials take
        a new value or expiry of a cookie they hold. Inside the caller's transaction, with the parent's
        row locked (one writer per run)."""
        existing: dict[tuple[str, str, str], Any] = {}
        size = 0
        for row in conn.execute(sa.select(run_cookies).where(run_cookies.c.parent_job_id == parent.id)):
            existing[(row.domain, row.path, row.name)] = row
            size += len(row.name) + len(row.value_encrypted)
        newest = newest_per_key(cookies)
        changed = False
        for key, item in newest.items():
            stored = existing.get(key)
            before = self._cookie(stored._mapping) if stored is not None else None
            if before is not None and (before.set_at > aware(item.set_at) or _same(before, item, stamp)):
                continue  # a newer response (another page's) set it already, or this one changes nothing
            values = self._row(parent.id, item)
            if before is None:
                size += len(item.cookie.name) + len(values["value_encrypted"])
                if len(existing) >= MAX_RUN_SESSION_COOKIES or size > MAX_RUN_SESSION_BYTES:
                    continue
                existing[key] = None
                conn.execute(sa.insert(run_cookies).values(values))
            else:
                conn.execute(sa.update(run_cookies).where(
                    run_cookies.c.parent_job_id == parent.id, run_cookies.c.domain == key[0],
                    run_cookies.c.path == key[1], run_cookies.c.name == key[2]).values(values))
            changed = True
        if not changed:
            return
        bumped = conn.execute(sa.update(run_sessions).where(run_sessions.c.parent_job_id == parent.id)
                              .values(version=run_sessions.c.version + 1, updated_at=stamp))
        if not bumped.rowcount:
            conn.execute(sa.insert(run_sessions).values(parent_job_id=parent.id, version=1, updated_at=stamp))
        auth_id = parent.metadata.get("auth_id")
        if isinstance(auth_id, str) and auth_id:
            self._refresh_credentials(conn, auth_id, parent.id, list(newest.values()), stamp)

    def _row(self, parent_id: str, item: SessionCookie) -> dict[str, Any]:
        cookie = item.cookie
        return {"parent_job_id": parent_id, "domain": cookie.domain, "path": cookie.path, "name": cookie.name,
                "value_encrypted": self.box.seal(cookie.value.encode(), _context(parent_id, item)),
                "host_only": cookie.host_only, "secure": cookie.secure, "http_only": cookie.http_only,
                "same_site": cookie.same_site[:16], "expires_at": None if item.removed else cookie.expires,
                "removed": item.removed, "set_by_url": item.set_by_url, "set_at": item.set_at}

    def _refresh_credentials(self, conn: Connection, auth_id: str, parent_id: str, cookies: list[SessionCookie],
                             stamp: datetime) -> None:
        """A site's response replaced a stored credential cookie (same name, domain, path, host-only) with
        a new value or expiry: the credentials keep it, so that the next run starts from the newest
        session. Cookies new to the site stay in the run's session; an expired one is not written back
        (the stored session is left as it was rather than emptied)."""
        query = sa.select(credentials).where(credentials.c.id == auth_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            return
        stored = opened_cookies(self.box, auth_id, row)
        by_key = {key_of(cookie): index for index, cookie in enumerate(stored)}
        refreshed = False
        for item in cookies:
            index = by_key.get(item.key)
            if index is None or item.removed:
                continue
            old, new = stored[index], item.cookie
            if old.host_only != new.host_only:
                continue
            expires = clamp_expiry(new.expires, stamp)
            if old.value != new.value or not _close(old.expires, expires, stamp):
                stored[index] = StoredCookie(**{**old.__dict__, "value": new.value, "expires": expires,
                                                "secure": new.secure, "http_only": new.http_only,
                                                "same_site": new.same_site or old.same_site})
                refreshed = True
        if refreshed:
            conn.execute(sa.update(credentials).where(credentials.c.id == auth_id).values(
                **sealed_cookies(self.box, auth_id, stored), refreshed_at=stamp, refreshed_by=parent_id))

    # ---- a lease --------------------------------------------------------------------------------
    def newer_than(self, parent_ids: Sequence[str], known: Mapping[str, int]) -> list[RunSession]:
        """The sessions of these runs whose version is newer than the one `known` names (0: none held)."""
        if not parent_ids:
            return []
        with self.db.read_engine.connect() as conn:
            versions = {parent_id: version for parent_id, version in conn.execute(
                sa.select(run_sessions.c.parent_job_id, run_sessions.c.version)
                .where(run_sessions.c.parent_job_id.in_(sorted(set(parent_ids)))))}
            stale = [parent_id for parent_id, version in versions.items() if version > known.get(parent_id, 0)]
            if not stale:
                return []
            sessions = {parent_id: RunSession(parent_id, versions[parent_id], []) for parent_id in stale}
            for row in conn.execute(sa.select(run_cookies).where(run_cookies.c.parent_job_id.in_(stale))).mappings():
                sessions[row["parent_job_id"]].cookies.append(self._cookie(row))
        return list(sessions.values())

    def _cookie(self, row: Any) -> SessionCookie:
        cookie = StoredCookie(row["name"], "", row["domain"], host_only=row["host_only"], path=row["path"],
                              secure=row["secure"], http_only=row["http_only"], same_site=row["same_site"],
                              expires=aware(row["expires_at"]) if row["expires_at"] else None)
        item = SessionCookie(cookie, row["set_by_url"], aware(row["set_at"]), row["removed"])
        cookie.value = self.box.open(row["value_encrypted"], _context(row["parent_job_id"], item)).decode()
        if item.removed:
            cookie.expires = EPOCH
        return item


def _same(before: SessionCookie, item: SessionCookie, now: datetime) -> bool:
    """Whether `item` changes nothing that matters: the same value and flags, and an expiry that moved by
    under 5% of its remaining lifetime (a sliding session re-sets its cookie on every answer: writing each
    one, and refreshing the credentials with it, doubled the manager's CPU per page for nothing)."""
    old, new = before.cookie, item.cookie
    return (before.removed == item.removed and old.value == new.value and old.host_only == new.host_only
            and old.secure == new.secure and old.http_only == new.http_only and old.same_site == new.same_site
            and (item.removed or _close(old.expires, new.expires, now)))


def _close(old: datetime | None, new: datetime | None, now: datetime) -> bool:
    if old is None or new is None:
        return old is new
    return abs((aware(new) - aware(old)).total_seconds()) <= 0.05 * max((aware(new) - aware(now)).total_seconds(), 0)


def _context(parent_id: str, item: SessionCookie) -> str:
    """What a sealed value is bound to: moving it to another run or cookie makes it unreadable."""
    return json.dumps([parent_id, *item.key])

