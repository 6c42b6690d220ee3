"""Reading cookies exported from a browser: Chrome extension JSON (e.g. EditThisCookie / Cookie-Editor),
Netscape cookies.txt, and Playwright storageState JSON.

Whatever the file holds, the result is cookies or one CookieFileError saying where the file is wrong
(never a Python exception's text, never a cookie's value). Which cookies may be stored is decided by
the manager (PutCredentials), with the same rules for every client.
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quaero.cookies import StoredCookie, canonical_domain

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_COOKIES = 10_000


class CookieFileError(ValueError):
    pass


def _where(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"cookie {index + 1}" + (f" ({name[:64]!r})" if isinstance(name, str) else "")


def _flag(item: dict[str, Any], key: str, where: str) -> bool:
    """JSON true/false, or what exporters write instead: "true"/"false", 1/0. Anything else is an error,
    so that "secure": "false" is never read as Secure."""
    value = item.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    raise CookieFileError(f"{where}: {key!r} must be true or false")


def _text(item: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise CookieFileError(f"{where}: {key!r} must be a string" if key in item else f"{where} has no {key!r}")
    return value


def _expiry(value: Any, where: str) -> datetime | None:
    """Seconds since 1970 (int, float or a numeric string); none, 0 or negative means a session cookie."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise CookieFileError(f"{where}: the expiry {value[:40]!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CookieFileError(f"{where}: the expiry is not a number of seconds")
    if value <= 0:
        return None
    try:
        return datetime.fromtimestamp(min(float(value), 253402300799.0), UTC)  # at most year 9999
    except (OverflowError, OSError, ValueError):
        raise CookieFileError(f"{where}: the expiry is out of range") from None


def _same_site(value: Any) -> str:
    text = str(value or "").lower()
    return {"no_restriction": "none", "unspecified": ""}.get(text, text)[:16]


def _from_browser_object(item: Any, index: int, playwright: bool) -> StoredCookie:
    where = _where(index, item)
    if not isinstance(item, dict):
        raise CookieFileError(f"{where} is not a JSON object")
    name = _text(item, "name", where, required=True)
    value = _text(item, "value", where, required=True)
    raw_domain = _text(item, "domain", where)
    host_only = _flag(item, "hostOnly", where) if "hostOnly" in item else not raw_domain.startswith(".")
    if playwright:
        expires = _expiry(item.get("expires"), where)
    else:
        expires = None if _flag(item, "session", where) else _expiry(item.get("expirationDate"), where)
    return StoredCookie(name=name, value=value, domain=canonical_domain(raw_domain), host_only=host_only,
                        path=_text(item, "path", where) or "/", secure=_flag(item, "secure", where),
                        http_only=_flag(item, "httpOnly", where), expires=expires,
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
        for flag, what in ((subdomains, "the subdomains flag"), (secure, "the secure flag")):
            if flag.upper() not in ("TRUE", "FALSE"):
                raise CookieFileError(f"line {number}: {what} must be TRUE or FALSE")
        expiry = _expiry(expires.strip() or None, f"line {number}")
        cookies.append(StoredCookie(name=name, value=value, domain=canonical_domain(domain),
                                    host_only=subdomains.upper() != "TRUE", path=path or "/",
                                    secure=secure.upper() == "TRUE", http_only=http_only, expires=expiry))
    return cookies


def read_cookie_file(path: Path) -> tuple[str, list[StoredCookie]]:
    """Returns (format name, cookies). Raises CookieFileError with a readable message."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CookieFileError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not a cookie export")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CookieFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CookieFileError(f"{path}: is a directory") from None
    except PermissionError:
        raise CookieFileError(f"{path}: not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise CookieFileError(f"{path}: not a text file") from None
    except OSError as error:
        raise CookieFileError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    return parse_cookie_text(text, str(path))


def parse_cookie_text(text: str, name: str) -> tuple[str, list[StoredCookie]]:
    """A cookie export's text (a file's, or one uploaded to the console): (format name, cookies), or a
    CookieFileError that starts with `name`."""
    try:
        kind, cookies = _parse(text)
    except CookieFileError as error:
        raise CookieFileError(f"{name}: {error}") from None
    if len(cookies) > MAX_COOKIES:
        raise CookieFileError(f"{name}: {len(cookies)} cookies; at most {MAX_COOKIES} are imported at once")
    return kind, cookies


def _parse(text: str) -> tuple[str, list[StoredCookie]]:
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CookieFileError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
        except RecursionError:
            raise CookieFileError("not valid JSON (nested too deeply)") from None
        if isinstance(data, dict) and "cookies" in data:
            if not isinstance(data["cookies"], list):
                raise CookieFileError("a storageState whose 'cookies' is not a list")
            return "playwright storageState", [_from_browser_object(item, index, True)
                                               for index, item in enumerate(data["cookies"])]
        if isinstance(data, list):
            return "browser extension JSON", [_from_browser_object(item, index, False)
                                              for index, item in enumerate(data)]
        raise CookieFileError("JSON, but neither a list of cookies nor a storageState object")
    if "\t" in text or stripped.startswith("# Netscape") or stripped.startswith("# HTTP Cookie File"):
        return "Netscape cookies.txt", _netscape(text)
    raise CookieFileError("not a cookie export (expected browser JSON, cookies.txt or storageState)")
