"""Every proto <-> Python conversion: Struct <-> dict, Timestamp <-> datetime, cookies, job statuses,
crawl specs and definitions."""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import tomli_w
from google.protobuf import struct_pb2, timestamp_pb2

from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2

from .cookies import StoredCookie, canonical_site
from .cookies.session import SessionCookie
from .crawl_spec import LIST_FIELDS, CrawlSpec, Definition, FailureAction, Render
from .errors import InvalidArgument, Reason
from .job_status import JobStatus
from .schedules import Overlap, Schedule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _BadValue(Exception):
    """A Struct value with no JSON form; `path` is filled in on the way out (free when all is well)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
        self.path: list[str] = []


def _python_of(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer():
            # Struct has only doubles; keep integers integers so {"count": 3} round-trips as 3.
            return int(number) if abs(number) < 2**53 else number
        if not math.isfinite(number):
            raise _BadValue("is not a finite number (JSON has no NaN or Infinity)")
        return number
    if kind == "struct_value":
        return _dict_of(value.struct_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        items = []
        for index, item in enumerate(value.list_value.values):
            try:
                items.append(_python_of(item))
            except _BadValue as error:
                error.path.append(f"[{index}]")
                raise
        return items
    if kind == "null_value":
        return None
    raise _BadValue("has no kind set (a google.protobuf.Value holds exactly one of null_value, number_value, "
                    "string_value, bool_value, struct_value or list_value)")


def _dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    result = {}
    for key, value in struct.fields.items():
        try:
            result[key] = _python_of(value)
        except _BadValue as error:
            error.path.append(f".{key}" if key.isidentifier() else f"[{json.dumps(key)}]")
            raise
    return result


def struct_to_dict(struct: struct_pb2.Struct, field: str = "struct") -> dict[str, Any]:
    """The JSON object a Struct holds. A value with no JSON form (a NaN or infinite number, a Value with
    no kind set, which is what some clients send for a misspelt field) is INVALID_ARGUMENT naming its
    path, e.g. `metadata.progress[2]`: never read as null, which a merge would take for "delete"."""
    try:
        return _dict_of(struct)
    except _BadValue as error:
        path = field + "".join(reversed(error.path))
        raise InvalidArgument(Reason.INVALID_VALUE, f"{path} {error.why}", path) from None


def _fill_value(target: struct_pb2.Value, value: Any) -> None:
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int or kind is float:
        target.number_value = value
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, dict):
        target.struct_value.SetInParent()  # so that an empty object is still an object
        _fill_struct(target.struct_value, value)
    elif isinstance(value, (list, tuple)):
        target.list_value.SetInParent()
        values = target.list_value.values
        for item in value:
            _fill_value(values.add(), item)
    else:
        raise TypeError(f"cannot put a {kind.__name__} in a Struct")


def _fill_struct(struct: struct_pb2.Struct, data: dict[str, Any]) -> None:
    fields = struct.fields
    for key, value in data.items():
        _fill_value(fields[key], value)


def dict_to_struct(data: dict[str, Any] | None, target: struct_pb2.Struct | None = None) -> struct_pb2.Struct:
    """Like Struct.update, without its per-value dispatch (1.6x faster on job metadata)."""
    struct = target if target is not None else struct_pb2.Struct()
    if data:
        _fill_struct(struct, data)
    return struct


def message_size(message: Any) -> int:
    """What a message adds to a list response: its bytes, its field tag and its length prefix."""
    return message.ByteSize() + 6


def to_timestamp(moment: datetime | None, target: timestamp_pb2.Timestamp) -> None:
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # What Timestamp.FromDatetime does, without its generic conversions.
        target.seconds = int((moment - EPOCH).total_seconds() // 1)
        target.nanos = moment.microsecond * 1000


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def cookie_from_proto(cookie: auth_pb2.Cookie) -> StoredCookie:
    return StoredCookie(
        name=cookie.name, value=cookie.value, domain=cookie.domain, host_only=not cookie.include_subdomains,
        path=cookie.path or "/", secure=cookie.secure, http_only=cookie.http_only,
        expires=from_timestamp(cookie.expire_time) if cookie.HasField("expire_time") else None,
        same_site=cookie.same_site)


def add_cookie(cookies: Any, cookie: StoredCookie) -> None:
    """Appends `cookie` to a repeated Cookie field."""
    fill_cookie(cookies.add(), cookie)


def put_credentials_request(site: str, cookies: list[StoredCookie], auth_id: str = "", base_url: str = "",
                            user_agent: str = "") -> auth_pb2.PutCredentialsRequest:
    """Storing a browser session's cookies for a site (the CLI's import and the console's): the id defaults
    to the site, the base URL to https://SITE/."""
    request = auth_pb2.PutCredentialsRequest(id=auth_id or canonical_site(site), site_domain=site,
                                             base_url=base_url or f"https://{canonical_site(site)}/",
                                             user_agent=user_agent)
    for cookie in cookies:
        add_cookie(request.cookies, cookie)
    return request


def fill_cookie(message: auth_pb2.Cookie, cookie: StoredCookie) -> None:
    message.name, message.value, message.domain, message.path = cookie.name, cookie.value, cookie.domain, cookie.path
    message.include_subdomains, message.secure, message.http_only = not cookie.host_only, cookie.secure, cookie.http_only
    message.same_site = cookie.same_site
    to_timestamp(cookie.expires, message.expire_time)


# ---- job status ------------------------------------------------------------------------------------
_STATUS_TO_PROTO = {status: jobs_pb2.JobStatus.Value("JOB_STATUS_" + status.name) for status in JobStatus}
_STATUS_FROM_PROTO = {value: status for status, value in _STATUS_TO_PROTO.items()}


def job_status_to_proto(status: str) -> jobs_pb2.JobStatus.ValueType:
    return _STATUS_TO_PROTO[JobStatus(status)]


def job_status(value: int) -> JobStatus:
    """The JobStatus of a proto value; InvalidArgument for UNSPECIFIED and unknown numbers."""
    try:
        return _STATUS_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(Reason.INVALID_STATUS, "status must be one of PENDING, RUNNING, COMPLETED, FAILED, "
                              "CANCELLED", "status") from None


def status_label(value: int) -> str:
    """'completed' for JOB_STATUS_COMPLETED (and 'unspecified' for 0), for people."""
    if value not in jobs_pb2.JobStatus.values():
        return str(value)
    return jobs_pb2.JobStatus.Name(value).removeprefix("JOB_STATUS_").lower()  # type: ignore[arg-type]


# ---- definitions -----------------------------------------------------------------------------------
_ACTION_TO_PROTO = {FailureAction.STOP_ALL: definitions_pb2.FAILURE_ACTION_STOP_ALL,
                    FailureAction.CONTINUE: definitions_pb2.FAILURE_ACTION_CONTINUE}
_ACTION_FROM_PROTO = {**{value: action for action, value in _ACTION_TO_PROTO.items()},
                      definitions_pb2.FAILURE_ACTION_UNSPECIFIED: FailureAction.CONTINUE}
_RENDER_TO_PROTO = {Render.HTTP: definitions_pb2.RENDER_MODE_HTTP, Render.JS: definitions_pb2.RENDER_MODE_JS}
_RENDER_FROM_PROTO = {**{value: mode for mode, value in _RENDER_TO_PROTO.items()},
                      definitions_pb2.RENDER_MODE_UNSPECIFIED: Render.HTTP}
_OPTIONAL = ("max_depth", "max_pages", "same_site_only", "concurrency", "per_host_delay_seconds",
             "request_timeout_seconds")


def crawl_mapping_from_proto(message: definitions_pb2.CrawlConfig) -> dict[str, Any]:
    """The mapping CrawlSpec.from_mapping checks: unset optional fields are None (the default)."""
    data: dict[str, Any] = {key: list(getattr(message, key)) for key in LIST_FIELDS}
    for key in _OPTIONAL:
        data[key] = getattr(message, key) if message.HasField(key) else None  # type: ignore[arg-type]
    data["user_agent"] = message.user_agent
    data["ignore_robots_txt"] = message.ignore_robots_txt
    data["allow_private_networks"] = message.allow_private_networks
    mode = _RENDER_FROM_PROTO.get(message.render)
    data["render"] = str(mode) if mode else f"unknown value {message.render}"
    return data


def crawl_spec_to_proto(spec: CrawlSpec, target: definitions_pb2.CrawlConfig | None = None) -> definitions_pb2.CrawlConfig:
    message = target if target is not None else definitions_pb2.CrawlConfig()
    for key, value in spec.to_mapping().items():
        if key == "render":
            message.render = _RENDER_TO_PROTO[Render(value)]
        elif isinstance(value, list):
            getattr(message, key).extend(value)
        else:
            setattr(message, key, value)
    return message


# A run's document against the latest stored version of its URL, by its name (the manager's stored kind, the
# CLI's --kind and export).
DOCUMENT_KINDS: dict[str, documents_pb2.DocumentKind.ValueType] = {
    "new": documents_pb2.DOCUMENT_KIND_NEW, "changed": documents_pb2.DOCUMENT_KIND_CHANGED,
    "unchanged": documents_pb2.DOCUMENT_KIND_UNCHANGED, "gone": documents_pb2.DOCUMENT_KIND_GONE}
DOCUMENT_KIND_NAMES: dict[int, str] = {number: name for name, number in DOCUMENT_KINDS.items()}

_OVERLAP_TO_PROTO = {Overlap.SKIP: definitions_pb2.OVERLAP_SKIP, Overlap.BUFFER_ONE: definitions_pb2.OVERLAP_BUFFER_ONE,
                     Overlap.CANCEL_PREVIOUS: definitions_pb2.OVERLAP_CANCEL_PREVIOUS}
_OVERLAP_FROM_PROTO = {**{value: overlap for overlap, value in _OVERLAP_TO_PROTO.items()},
                       definitions_pb2.OVERLAP_UNSPECIFIED: Overlap.SKIP}


def schedule_mapping_from_proto(message: definitions_pb2.Schedule) -> dict[str, Any]:
    overlap = _OVERLAP_FROM_PROTO.get(message.overlap)
    return {"cron": message.cron, "timezone": message.timezone, "jitter": message.jitter.ToTimedelta().total_seconds(),
            "overlap": str(overlap) if overlap else f"unknown value {message.overlap}",
            "catchup_window": message.catchup_window.ToTimedelta().total_seconds()
            if message.HasField("catchup_window") else None, "paused": message.paused}


def schedule_to_proto(schedule: Schedule, target: definitions_pb2.Schedule) -> None:
    target.cron, target.timezone, target.paused = schedule.cron, schedule.timezone, schedule.paused
    target.overlap = _OVERLAP_TO_PROTO[schedule.overlap]
    target.jitter.FromTimedelta(timedelta(seconds=schedule.jitter_seconds))
    target.catchup_window.FromTimedelta(timedelta(seconds=schedule.catchup_seconds))


def definition_mapping_from_proto(message: definitions_pb2.JobDefinition) -> dict[str, Any]:
    action = _ACTION_FROM_PROTO.get(message.failure_action)
    schedule = {"schedule": schedule_mapping_from_proto(message.schedule)} if message.HasField("schedule") else {}
    return {**schedule, "id": message.id, "name": message.name, "type": message.type, "auth_id": message.auth_id,
            "crawl": crawl_mapping_from_proto(message.crawl), "max_child_failures": message.max_child_failures,
            "failure_action": str(action) if action else f"unknown value {message.failure_action}",
            "keep_runs": message.keep_runs, "keep_days": message.keep_days}


def definition_to_toml(message: definitions_pb2.JobDefinition) -> str:
    """The definition as a TOML file `quaero definitions apply` takes back (unset values left out)."""
    def present(value: Any) -> bool:
        return value is not None and value != [] and value != ""

    data = definition_mapping_from_proto(message)
    data["crawl"] = {key: value for key, value in data["crawl"].items() if present(value)}
    if "schedule" in data:
        data["schedule"] = {key: value for key, value in data["schedule"].items() if present(value)}
    order = ["id", "name", "type", "auth_id", "max_child_failures", "failure_action", "keep_runs", "keep_days",
             "schedule", "crawl"]  # tables last, as TOML needs
    return tomli_w.dumps({key: data[key] for key in order if key in data and present(data[key])})


def definition_to_proto(definition: Definition, created: datetime | None = None,
                        updated: datetime | None = None) -> definitions_pb2.JobDefinition:
    message = definitions_pb2.JobDefinition(
        id=definition.id, name=definition.name, type=definition.type, auth_id=definition.auth_id,
        max_child_failures=definition.policy.max_child_failures,
        failure_action=_ACTION_TO_PROTO[definition.policy.failure_action], keep_runs=definition.policy.keep_runs,
        keep_days=definition.policy.keep_days)
    crawl_spec_to_proto(definition.spec, message.crawl)
    if definition.schedule is not None:
        schedule_to_proto(definition.schedule, message.schedule)
    to_timestamp(created, message.create_time)
    to_timestamp(updated, message.update_time)
    return message


def session_cookie_to_proto(item: SessionCookie, target: Any) -> None:
    """Appends `item` to a repeated SessionCookie field."""
    message = target.add(set_by_url=item.set_by_url, removed=item.removed)
    fill_cookie(message.cookie, item.cookie)
    if item.removed:
        message.cookie.ClearField("expire_time")
    to_timestamp(item.set_at, message.set_time)


def session_cookie_from_proto(message: Any) -> SessionCookie:
    return SessionCookie(cookie_from_proto(message.cookie), message.set_by_url,
                         from_timestamp(message.set_time) or datetime.now(UTC), message.removed)
