"""A stored cookie, and the JSON form credentials are sealed in (values) and indexed by (no values)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class StoredCookie:
    name: str
    value: str
    domain: str
    host_only: bool = True
    path: str = "/"
    secure: bool = False
    http_only: bool = False
    expires: datetime | None = None  # None: a session cookie
    same_site: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def is_expired(self, at: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (at or datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["expires"] = self.expires.isoformat() if self.expires else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredCookie:
        expires = datetime.fromisoformat(data["expires"]) if data.get("expires") else None
        return cls(**{**data, "expires": expires})

    def index_entry(self) -> dict[str, Any]:
        """Everything but the value: what may be listed."""
        entry = self.to_json()
        del entry["value"], entry["extra"]
        return entry
