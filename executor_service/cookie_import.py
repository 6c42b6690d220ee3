"""Reading cookies exported from a browser: Chrome extension JSON (e.g. EditThisCookie / Cookie-Editor),
Netscape cookies.txt, and Playwright storageState JSON."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from manager_service.cookies import StoredCookie, canonical_domain


class CookieFileError(ValueError):
    pass


def _expiry(seconds: Any) -> datetime | None:
    if seconds in (None, "", -1, 0) or (isinstance(seconds, (int, float)) and seconds < 0):
        return None
    return datetime.fromtimestamp(float(seconds), UTC)


def _same_site(value: Any) -> str:
    text = str(value or "").lower()
    return {"no_restriction": "none", "unspecified": ""}.get(text, text)


def _from_browser_object(item: dict[str, Any], playwright: bool) -> StoredCookie:
    if "name" not in item or "value" not in item:
        raise CookieFileError("a cookie object has no name or value")
    raw_domain = str(item.get("domain") or "")
    if "hostOnly" in item:
        host_only = bool(item["hostOnly"])
    else:
        host_only = not raw_domain.startswith(".")
    if playwright:
        expires = _expiry(item.get("expires"))
    else:
        expires = None if item.get("session") else _expiry(item.get("expirationDate"))
    return StoredCookie(name=str(item["name"]), value=str(item["value"]), domain=canonical_domain(raw_domain),
                        host_only=host_only, path=str(item.get("path") or "/"), secure=bool(item.get("secure")),
                        http_only=bool(item.get("httpOnly")), expires=expires,
                        same_site=_same_site(item.get("sameSite")))


def _netscape(text: str) -> list[StoredCookie]:
    cookies = []
    for number, line in enumerate(text.splitlines(), start=1):
        http_only = line.startswith("#HttpOnly_")
        if http_only:
            line = line[len("#HttpOnly_"):]
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 7:
            raise CookieFileError(f"line {number} is not a cookies.txt line (7 tab-separated fields expected)")
        domain, subdomains, path, secure, expires, name, value = fields
        try:
            expiry = _expiry(int(expires))
        except ValueError:
            raise CookieFileError(f"line {number}: the expiry {expires!r} is not a number") from None
        cookies.append(StoredCookie(name=name, value=value, domain=canonical_domain(domain),
                                    host_only=subdomains.upper() != "TRUE", path=path or "/",
                                    secure=secure.upper() == "TRUE", http_only=http_only, expires=expiry))
    return cookies


def read_cookie_file(path: Path) -> tuple[str, list[StoredCookie]]:
    """Returns (format name, cookies). Raises CookieFileError with a readable message."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CookieFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CookieFileError(f"{path}: not a text file") from None
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CookieFileError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("cookies"), list):
            return "playwright storageState", [_from_browser_object(i, True) for i in data["cookies"]]
        if isinstance(data, list) and all(isinstance(i, dict) for i in data):
            return "browser extension JSON", [_from_browser_object(i, False) for i in data]
        raise CookieFileError(f"{path}: JSON, but neither a list of cookies nor a storageState object")
    if "\t" in text or stripped.startswith("# Netscape") or stripped.startswith("# HTTP Cookie File"):
        return "Netscape cookies.txt", _netscape(text)
    raise CookieFileError(f"{path}: not a cookie export (expected browser JSON, cookies.txt or storageState)")


def belongs_to_site(cookie: StoredCookie, site: str) -> bool:
    domain, site = cookie.domain, canonical_domain(site)
    return domain == site or domain.endswith("." + site) or (not cookie.host_only and site.endswith("." + domain))
