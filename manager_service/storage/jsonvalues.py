"""Validation and normalisation of the free-form JSON objects jobs carry (config, metadata, result)."""
from __future__ import annotations

import json
from typing import Any

import orjson

from quaero.errors import InvalidArgument, Reason

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
# Sorted keys; the types orjson writes but json.dumps did not go to `default`, absent: TypeError.
ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                  | orjson.OPT_PASSTHROUGH_SUBCLASS)


def dumps(value: Any) -> str:
    """Compact, stable serialisation: the form whose size the 64 KiB limit counts, and the one text form
    of every object SQLite stores. (SQLite's json_patch matches keys by their text: a key stored escaped,
    "\\u00e9", is not the key "é" of a patch, so a merge could neither replace nor delete it.)

    orjson's, a tenth of json.dumps' CPU (it was 6% of the manager's time in a crawl, for the children's
    configs); the same text but for exponents (1e-7, not 1e-07). What orjson does not do as json.dumps
    did falls back to json.dumps: integers past 64 bits, keys that are not strings, datetimes, dataclasses
    and subclasses of str, int, dict or list (refused or written as before), and NaN or Infinity, which
    orjson writes as null and json.dumps refuses (ValueError). Only a UUID or an Enum member from a Python
    caller is written (as text, as its value) where json.dumps refused it; a Struct holds neither."""
    try:
        text = orjson.dumps(value, option=ORJSON_OPTIONS).decode()
    except TypeError:
        return _json_dumps(value)
    if "null" in text:  # (a None, or a NaN orjson turned into null: only json.dumps can tell)
        _json_dumps(value)
    return text


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """A stored object back to Python: orjson (a fifth of json.loads' CPU on job rows, which every GetJob
    and merge answer decodes three of). What orjson refuses, json.loads reads as before (nothing stored
    by this project is refused; the fallback is for what another writer might have put there)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def depth_of(value: Any) -> int:
    """Nesting depth: a scalar is 0, {} or [] is 1, {"a": {}} is 2. Iterative (a Python caller's value
    may be deeper than the interpreter's stack), and only containers are visited: most values of job
    metadata are scalars, and visiting each was half of this check's cost."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
    return deepest


def check_object(value: Any, field: str) -> str:
    """Checks that value is a JSON object within the size and depth limits; returns it serialised."""
    if not isinstance(value, dict):
        raise InvalidArgument(Reason.NOT_AN_OBJECT, f"{field} must be a JSON object", field)
    depth = depth_of(value)
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument(Reason.METADATA_TOO_DEEP, f"{field} is nested {depth} levels deep; the limit is "
                              f"{MAX_JSON_DEPTH}", field)
    try:
        text = dumps(value)
    except ValueError:  # NaN or Infinity from a Python caller (gRPC callers are stopped in convert)
        raise InvalidArgument(Reason.INVALID_VALUE, f"{field} holds a number that is not finite", field) from None
    except TypeError as error:
        raise InvalidArgument(Reason.INVALID_VALUE, f"{field} holds a value with no JSON form: {error}",
                              field) from None
    if "\\u0000" in text:  # the escape json.dumps writes for U+0000 (or a false alarm, checked below)
        _check_no_nul(value, field)
    size = len(text.encode())
    if size > MAX_JSON_BYTES:
        raise InvalidArgument(Reason.METADATA_TOO_LARGE,
            f"{field} is {size} bytes serialised; the limit is {MAX_JSON_BYTES} bytes (64 KiB)", field)
    return text


def _check_no_nul(value: Any, path: str) -> None:
    """U+0000 in a key or a string: PostgreSQL's jsonb cannot hold it, so neither database takes it."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(Reason.NUL_CHARACTER, f"{path} contains a NUL character (U+0000), which cannot "
                                  "be stored", path)
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"
            if "\x00" in key:
                raise InvalidArgument(Reason.NUL_CHARACTER, f"a key in {path} contains a NUL character (U+0000)",
                                      path)
            _check_no_nul(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_no_nul(item, f"{path}[{index}]")


def check_auth_id(metadata: dict[str, Any], field: str, merge: bool) -> None:
    """auth_id, when present after the write, is a non-empty string: in a merge patch null deletes it
    (allowed); in a new or replacing object null would be stored, so it is refused."""
    if "auth_id" not in metadata:
        return
    auth_id = metadata["auth_id"]
    if auth_id is None and merge:
        return
    if not isinstance(auth_id, str) or not auth_id.strip():
        raise InvalidArgument(Reason.INVALID_AUTH_ID, f"{field}.auth_id must be a non-empty string", f"{field}.auth_id")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch, in Python: the reference the database functions are tested against."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
