"""How things look: the Jinja environment (autoescaped: everything from a site is text, never markup) and
its filters for timestamps, statuses, links and search highlights."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from google.protobuf import timestamp_pb2
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from quaero import job_status
from quaero.api.manager.v1 import jobs_pb2
from quaero.convert import DOCUMENT_KIND_NAMES, job_status_to_proto, status_label

TEMPLATES = Path(__file__).parent / "templates"
TERMINAL = frozenset(job_status_to_proto(status) for status in job_status.TERMINAL)  # as proto values


def when(stamp: timestamp_pb2.Timestamp | None, empty: str = "–") -> str:
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return empty
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(stamp: timestamp_pb2.Timestamp | None) -> str:
    if stamp is None or stamp.seconds == 0:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).isoformat()


def duration(job: jobs_pb2.Job) -> str:
    if not job.start_time.seconds:
        return "–"
    end = job.finish_time.ToDatetime(tzinfo=UTC) if job.finish_time.seconds else datetime.now(UTC)
    seconds = max(0, int((end - job.start_time.ToDatetime(tzinfo=UTC)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def started_by(job: jobs_pb2.Job) -> str:
    """'schedule' or 'request' as the run's metadata says (a run made by CreateJob alone: '–')."""
    if "started_by" not in job.metadata:  # indexing a missing key would add it
        return "–"
    value = job.metadata["started_by"]
    return value if isinstance(value, str) and value else "–"


def safe_href(url: str) -> str:
    """A site's URL as a link target only when it is http(s); anything else (javascript:, data:) is no
    link at all."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "#"
    return url if scheme in ("http", "https") else "#"


def highlighted(snippet: str, ranges: Any) -> Markup:
    """A search snippet with its matched words in <mark>, every character of it escaped."""
    parts: list[str] = []
    position = 0
    for item in sorted(ranges, key=lambda r: r.start):
        start, end = max(item.start, position), min(item.end, len(snippet))
        if start >= end:
            continue
        parts.append(str(escape(snippet[position:start])))
        parts.append(f"<mark>{escape(snippet[start:end])}</mark>")
        position = end
    parts.append(str(escape(snippet[position:])))
    return Markup("".join(parts))


def paragraphs(text: str) -> list[str]:
    """A document's text as the paragraphs it was stored with (blank lines between them)."""
    return [part.strip() for part in text.replace("\r\n", "\n").split("\n\n") if part.strip()]


def kind(value: int) -> str:
    return DOCUMENT_KIND_NAMES.get(value, "–")


def percent(job: jobs_pb2.Job) -> int:
    return int(100 * job.progress_current / job.progress_total) if job.progress_total else 0


environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
environment.filters.update(when=when, iso=iso, status=status_label, duration=duration, started_by=started_by,
                           safe_href=safe_href, highlighted=highlighted, paragraphs=paragraphs, percent=percent,
                           kind=kind)
environment.globals.update(TERMINAL=TERMINAL)


def render(name: str, **context: Any) -> str:
    return environment.get_template(name).render(**context)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A whole page (or, for htmx, the fragment it asked for) with the session's CSRF token at hand (none
    for a static file's error page, which is answered without a session)."""
    session = getattr(request.state, "session", None)
    return HTMLResponse(render(name, request=request, csrf=session.csrf if session else "",
                               signed_in=bool(session and session.signed_in), **context), status_code)
