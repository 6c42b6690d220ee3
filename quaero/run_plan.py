"""What a run of a job definition starts from, the same whoever starts it (an executor asked by
ExecuteJobDefinition, or the manager's scheduler): the parent's config and metadata, and its first pages."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .crawl_spec import CrawlSpec, RunPolicy
from .tracing import TRACE_KEY
from .urls import normalise_url

PARENT_TYPE = "crawl"
CHILD_TYPE = "crawl_page"


def run_config(definition_id: str, spec: CrawlSpec, policy: RunPolicy) -> dict[str, Any]:
    """The run's config: what its pages read (the crawl spec) and what the manager settles it by."""
    return {"job_definition_id": definition_id, "crawl": spec.to_mapping(), **policy.to_mapping()}


def run_metadata(definition_id: str, auth_id: str, started_by: str, tick: datetime | None = None,
                 trace: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parent's metadata, persisted before any child exists: children find their credentials here.
    started_by: "request" (ExecuteJobDefinition) or "schedule" (then schedule_tick is the tick's time).
    trace: the run's W3C trace context when tracing is on (its pages join the run's trace: quaero.tracing)."""
    metadata: dict[str, Any] = {"job_definition_id": definition_id, "phase": "execution", "started_by": started_by}
    if auth_id:
        metadata["auth_id"] = auth_id
    if tick is not None:
        metadata["schedule_tick"] = tick.isoformat()
    if trace:
        metadata[TRACE_KEY] = dict(trace)
    return metadata


def start_urls(spec: CrawlSpec) -> list[str]:
    return [url for url in (normalise_url(u) for u in spec.start_urls) if url]


def page(url: str, depth: int) -> dict[str, Any]:
    """A child that fetches one page: type, name (for people; cut when long), dedup key (its URL; the manager
    stores a long one as its hash), depth and config."""
    name = url if len(url) <= 256 else url[:255] + "…"
    return {"type": CHILD_TYPE, "name": name, "dedup_key": url, "depth": depth, "config": {"url": url, "depth": depth}}
