"""What one response means for the page being fetched, decided without side effects: go on to a
redirect target, read this response as the page, or stop with a verdict. Table-tested in
tests/unit/test_hops.py."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from quaero.errors import Reason
from quaero.patterns import any_search
from quaero.urls import MAX_URL_LENGTH, is_logout_link, normalise_url

from .politeness import DEFAULT_RETRY_SECONDS, retry_after_seconds
from .verdicts import FetchFailed, LoggedOut, Verdict

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Redirect:
    target: str


@dataclass(frozen=True)
class Done:
    """This response is the page."""


@dataclass(frozen=True)
class Stop:
    verdict: Verdict


Decision = Redirect | Done | Stop


def next_hop(current: str, status: int, location: str | None, retry_after: str | None,
             logged_out: Sequence[Any]) -> Decision:
    """The decision for a response to `current`; logged_out are compiled patterns on a redirect's path."""
    if status in (429, 503):
        wait = retry_after_seconds(retry_after)
        reason = Reason.RATE_LIMITED if status == 429 else Reason.SERVER_UNAVAILABLE
        return Stop(Verdict(reason, f"{current} answered {status}; the page is tried again later",
                            retry_after=wait if wait is not None else DEFAULT_RETRY_SECONDS))
    if status in REDIRECT_CODES and location:
        return _redirect(current, location, logged_out)
    if status in (401, 403):
        return Stop(LoggedOut(Reason.AUTH_REJECTED, f"not authenticated: {current} answered {status}; the site "
                              "refused the stored session"))
    return Done()


def _redirect(current: str, location: str, logged_out: Sequence[Any]) -> Decision:
    if len(location) > MAX_URL_LENGTH:
        return Stop(FetchFailed(Reason.BAD_REDIRECT, f"{current} redirects to a URL longer than {MAX_URL_LENGTH} "
                                "characters"))
    target = normalise_url(location, current)
    if target is None:
        scheme = location.split(":", 1)[0].strip()[:20] if ":" in location else ""
        foreign = scheme.isalpha() and scheme.lower() not in ("http", "https")
        what = f"a {scheme}: URL" if foreign else "a URL it cannot follow"
        return Stop(FetchFailed(Reason.BAD_REDIRECT, f"{current} redirects to {what}, not an http(s) page"))
    path = urlsplit(target).path
    if any_search(list(logged_out), path):
        return Stop(LoggedOut(Reason.AUTH_EXPIRED, f"not authenticated: {current} redirected to the login page "
                              f"{path[:200]}; the session has expired or was logged out; import fresh cookies"))
    if is_logout_link(target):
        return Stop(FetchFailed(Reason.LOGOUT_REDIRECT, f"{current} redirects to a logout URL; not followed"))
    return Redirect(target)
