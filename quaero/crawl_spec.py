"""What a crawl does (CrawlSpec) and how its run treats failures (RunPolicy): one set of defaults, one
validation (InvalidArgument naming the field), and one mapping form (the JSON of a job definition and of
a run's config). The definition store, the executor, the CLI and the servicer all go through here.
Pure: no gRPC, no database.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidArgument, Reason
from .ids import check_credentials_id, check_definition_id
from .markers import MAX_MARKERS, check_marker
from .network_policy import MAX_ALLOWED_NETWORKS, NetworkPolicy, parse_networks
from .patterns import MAX_PATTERNS, compile_pattern
from .schedules import Schedule
from .urls import MAX_URL_LENGTH, has_credentials, normalise_url

DEFAULT_LOGGED_OUT_PATTERNS = (r"(?i)log[-_]?in", r"(?i)sign[-_]?in")
MAX_START_URLS = 1000
MAX_DEFINITION_NAME_CHARS = 512
USER_AGENT = re.compile(r"[\x20-\x7e]{0,512}")  # it goes into a request header
# (lowest, highest) for each number; a delay or timeout must also be finite.
RANGES: dict[str, tuple[float, float]] = {
    "max_depth": (0, 1000), "max_pages": (1, 10_000_000), "concurrency": (1, 256),
    "per_host_delay_seconds": (0, 60), "request_timeout_seconds": (0.1, 300),
}
PATTERN_FIELDS = ("include_patterns", "exclude_patterns", "logged_out_patterns")
LIST_FIELDS = ("start_urls", *PATTERN_FIELDS, "allowed_networks", "logged_out_markers")
FLAG_FIELDS = ("same_site_only", "ignore_robots_txt", "allow_private_networks")


class Render(StrEnum):
    """How a run's pages are read: the HTML the server sends, or the page a browser builds from it."""
    HTTP = "http"
    JS = "js"  # headless Chromium runs the page's scripts (executor_service/render)


@dataclass(frozen=True)
class CrawlSpec:
    start_urls: tuple[str, ...]
    max_depth: int = 3  # links followed from a start URL, at most this deep
    max_pages: int = 1000  # pages per run
    same_site_only: bool = True  # follow links only within the start URLs' registrable domains
    concurrency: int = 8  # pages at once per run
    per_host_delay_seconds: float = 0.0  # between two requests of the run to one host
    request_timeout_seconds: float = 30.0  # connect + headers + body, per hop
    user_agent: str = ""  # empty: the credentials' user agent, else quaero's
    ignore_robots_txt: bool = False
    include_patterns: tuple[str, ...] = ()  # RE2 on the URL; all when empty
    exclude_patterns: tuple[str, ...] = ()
    logged_out_patterns: tuple[str, ...] = DEFAULT_LOGGED_OUT_PATTERNS  # RE2 on a redirect target's path
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDRs reachable although private
    render: Render = Render.HTTP
    logged_out_markers: tuple[str, ...] = ()  # text:<RE2> / css:<selector>: a login form served in place

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "crawl") -> CrawlSpec:
        """A checked spec from its mapping form (None or absent: the default). InvalidArgument names the
        field at fault as `<prefix>.<field>[index]`."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        _require(not unknown, f"{prefix}.{unknown[0] if unknown else ''}",
                 f"{prefix} has unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {key: value for key, value in data.items() if value is not None}
        for key in RANGES:
            if key in values:
                values[key] = _number(values[key], f"{prefix}.{key}", *RANGES[key], integer=key in _INTEGERS)
        for key in FLAG_FIELDS:
            if key in values:
                _require(isinstance(values[key], bool), f"{prefix}.{key}", f"{prefix}.{key} must be true or false")
        for key in LIST_FIELDS:
            if key in values:
                values[key] = tuple(_strings(values[key], f"{prefix}.{key}"))
        if not values.get("logged_out_patterns"):
            values.pop("logged_out_patterns", None)  # empty means the default
        render = values.get("render") or Render.HTTP
        _require(render in tuple(Render), f"{prefix}.render",
                 f"{prefix}.render must be \"http\" (the HTML the server sends) or \"js\" (a browser runs the page's "
                 "scripts)")
        values["render"] = Render(render)
        user_agent = values.get("user_agent", "")
        _require(isinstance(user_agent, str) and USER_AGENT.fullmatch(user_agent) is not None, f"{prefix}.user_agent",
                 f"{prefix}.user_agent must be printable ASCII of at most 512 characters (it is sent as a header)")
        networks = values.get("allowed_networks", ())
        _require(len(networks) <= MAX_ALLOWED_NETWORKS, f"{prefix}.allowed_networks",
                 f"{prefix}.allowed_networks holds more than {MAX_ALLOWED_NETWORKS} networks")
        try:
            parsed = parse_networks(networks)
        except ValueError as error:
            raise InvalidArgument(Reason.INVALID_DEFINITION, f"{prefix}.allowed_networks{error}",
                                  f"{prefix}.allowed_networks") from None
        values["allowed_networks"] = tuple(str(network) for network in parsed)
        policy = NetworkPolicy(bool(values.get("allow_private_networks")), parsed)
        starts = values.get("start_urls", ())
        _require(bool(starts), f"{prefix}.start_urls", f"{prefix}.start_urls needs at least one http(s) URL")
        _require(len(starts) <= MAX_START_URLS, f"{prefix}.start_urls",
                 f"{prefix}.start_urls holds more than {MAX_START_URLS} URLs")
        values["start_urls"] = tuple(_start_url(url, f"{prefix}.start_urls[{index}]", policy)
                                     for index, url in enumerate(starts))
        for key in PATTERN_FIELDS:
            _check_each(values.get(key, ()), f"{prefix}.{key}", MAX_PATTERNS, "patterns", compile_pattern)
        _check_each(values.get("logged_out_markers", ()), f"{prefix}.logged_out_markers", MAX_MARKERS, "markers",
                    check_marker)
        return cls(**values)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> CrawlSpec:
        """The spec a run stored in its config. Stored specs were checked when the definition was; one
        that no longer passes (written before a check existed) is read with its numbers brought within
        range rather than failing every page of the run."""
        try:
            return cls.from_mapping(data)
        except InvalidArgument:
            values = {key: value for key, value in data.items() if key in cls.__dataclass_fields__ and value is not None}
            for key, (low, high) in RANGES.items():
                if key in values:
                    values[key] = _clamped(values[key], getattr(cls, key), low, high, key in _INTEGERS)
            for key in LIST_FIELDS:
                if key in values:
                    values[key] = tuple(str(item) for item in values[key] or ())
            if not values.get("logged_out_patterns"):
                values.pop("logged_out_patterns", None)
            values["render"] = Render.JS if values.get("render") == Render.JS else Render.HTTP
            values.setdefault("start_urls", ())
            return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The JSON form (lists, not tuples) stored in definitions and run configs."""
        return {key: list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Render) else value
                for key, value in asdict(self).items()}

    def network_policy(self) -> NetworkPolicy:
        try:
            return NetworkPolicy(self.allow_private_networks, parse_networks(self.allowed_networks))
        except ValueError:
            return NetworkPolicy(self.allow_private_networks)


class FailureAction(StrEnum):
    CONTINUE = "continue"  # keep crawling; the run fails at the end if failures went past the tolerance
    STOP_ALL = "stop_all"  # past the tolerance, cancel pending pages and fail the run


@dataclass(frozen=True)
class RunPolicy:
    max_child_failures: int = 0
    failure_action: FailureAction = FailureAction.CONTINUE
    keep_runs: int = 0  # runs of the definition kept (the newest); 0: the manager's default
    keep_days: int = 0  # runs finished longer ago than this are deleted; 0: kept whatever their age

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RunPolicy:
        failures = data.get("max_child_failures") or 0
        _require(isinstance(failures, int) and not isinstance(failures, bool) and failures >= 0,
                 "max_child_failures", "max_child_failures must be a whole number, 0 or more")
        action = data.get("failure_action") or FailureAction.CONTINUE
        _require(action in tuple(FailureAction), "failure_action", "failure_action must be stop_all or continue")
        keep = {}
        for name, most in (("keep_runs", 100_000), ("keep_days", 36_500)):
            value = data.get(name) or 0
            _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most, name,
                     f"{name} must be a whole number from 0 (the manager's default) to {most}")
            keep[name] = int(value)
        return cls(int(failures), FailureAction(action), **keep)

    def to_mapping(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {"max_child_failures": self.max_child_failures,
                                   "failure_action": str(self.failure_action)}
        if self.keep_runs:
            mapping["keep_runs"] = self.keep_runs
        if self.keep_days:
            mapping["keep_days"] = self.keep_days
        return mapping


_INTEGERS = frozenset({"max_depth", "max_pages", "concurrency"})


def _check_each(items: tuple[str, ...], field: str, most: int, what: str, check: Callable[[str], Any]) -> None:
    """At most `most` items, each passing `check` (which raises ValueError saying what is wrong)."""
    _require(len(items) <= most, field, f"{field} holds more than {most} {what}")
    for index, item in enumerate(items):
        try:
            check(item)
        except ValueError as error:
            raise InvalidArgument(Reason.INVALID_DEFINITION, f"{field}[{index}] {item[:200]!r}: {error}",
                                  f"{field}[{index}]") from None


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidArgument(Reason.INVALID_DEFINITION, message, field)


def _number(value: Any, field: str, low: float, high: float, integer: bool) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
    if ok and integer:
        ok = float(value).is_integer()
    kind = "a whole number" if integer else "a number"
    _require(ok, field, f"{field} must be {kind} from {low:g} to {high:g}")
    return int(value) if integer else float(value)


def _clamped(value: Any, default: Any, low: float, high: float, integer: bool) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    if not math.isfinite(number):
        return default
    number = min(max(number, low), high)
    return int(number) if integer else number


def _strings(value: Any, field: str) -> list[str]:
    _require(isinstance(value, list | tuple), field, f"{field} must be a list of strings")
    for index, item in enumerate(value):
        _require(isinstance(item, str), f"{field}[{index}]", f"{field}[{index}] must be a string")
    return list(value)


def _looks_absolute_http(url: str) -> bool:
    try:
        parts = urlsplit(url.strip())
        return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
    except ValueError:  # e.g. "http://[::1" (an unclosed IPv6 bracket)
        return True


def _start_url(url: str, field: str, policy: NetworkPolicy) -> str:
    # Never echoed back: the URL may hold a password.
    _require(not has_credentials(url), field, f"{field} holds a user name or password (user:password@); the crawl "
             "never sends them: remove them and give the session as credentials (auth_id)")
    normal = normalise_url(url)
    if normal is None:
        why = (f"cannot be crawled (a bad host or port, or longer than {MAX_URL_LENGTH} characters)"
               if _looks_absolute_http(url) else "is not an absolute http(s) URL")
        _require(False, field, f"start URL {url[:200]!r} {why}")
        raise AssertionError("unreachable")
    refused = policy.host_refusal(urlsplit(normal).hostname or "")
    article = "an" if (refused or "")[:1] in "aeiou" else "a"
    _require(refused is None, field, f"start URL {normal[:200]!r} is on {article} {refused} address; a crawl reaches "
             "only public addresses unless the definition allows more (crawl.allow_private_networks = true, or "
             "crawl.allowed_networks = [\"10.0.0.0/8\"])")
    return normal


@dataclass(frozen=True)
class Definition:
    """A job definition: a named crawl spec with the credentials to use and a run policy."""
    id: str
    spec: CrawlSpec
    name: str = ""
    type: str = "crawler"
    auth_id: str = ""
    policy: RunPolicy = field(default_factory=RunPolicy)
    schedule: Schedule | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Definition:
        """Checked, with InvalidArgument naming the field as `job_definition.<field>`."""
        kind = data.get("type") or "crawler"
        _require(kind == "crawler", "job_definition.type", f"type {kind!r} is not supported; the only type is 'crawler'")
        definition_id = data.get("id") or ""
        if definition_id:
            check_definition_id(definition_id, "job_definition.id")
        auth_id = data.get("auth_id") or ""
        if auth_id:
            check_credentials_id(auth_id, "job_definition.auth_id")
        name = data.get("name") or definition_id
        _require(len(name) <= MAX_DEFINITION_NAME_CHARS and "\x00" not in name, "job_definition.name",
                 f"name must be at most {MAX_DEFINITION_NAME_CHARS} characters, without NUL")
        try:
            policy = RunPolicy.from_mapping(data)
        except InvalidArgument as error:
            raise InvalidArgument(error.reason, error.message, f"job_definition.{error.field}") from None
        spec = CrawlSpec.from_mapping(data.get("crawl") or {}, prefix="job_definition.crawl")
        scheduled = data.get("schedule")
        schedule = None
        if scheduled:
            _require(isinstance(scheduled, Mapping), "job_definition.schedule", "schedule must be a table of cron, "
                     "timezone, jitter, overlap, catchup_window and paused")
            schedule = Schedule.from_mapping(scheduled, "job_definition.schedule")
        return cls(id=definition_id, spec=spec, name=name, type=kind, auth_id=auth_id, policy=policy,
                   schedule=schedule)

    def to_mapping(self) -> dict[str, Any]:
        schedule = {"schedule": self.schedule.to_mapping()} if self.schedule is not None else {}
        return {"id": self.id, "name": self.name, "type": self.type, "auth_id": self.auth_id,
                "crawl": self.spec.to_mapping(), **self.policy.to_mapping(), **schedule}
