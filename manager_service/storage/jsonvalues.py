"""Validation and normalisation of the free-form JSON objects jobs carry (config, metadata, result)."""
from __future__ import annotations

import json
from typing import Any

from quaero.errors import InvalidArgument, Reason

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32


def dumps(value: Any) -> str:
    """Compact, stable serialisation; the form whose size the 64 KiB limit counts."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def depth_of(value: Any) -> int:
    """Nesting depth: a scalar is 0, {} or [] is 1, {"a": {}} is 2."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def check_object(value: Any, field: str) -> str:
    """Checks that value is a JSON object within the size and depth limits; returns it serialised."""
    if not isinstance(value, dict):
        raise InvalidArgument(Reason.NOT_AN_OBJECT, f"{field} must be a JSON object", field)
    depth = depth_of(value)
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument(Reason.METADATA_TOO_DEEP, f"{field} is nested {depth} levels deep; the limit is "
                              f"{MAX_JSON_DEPTH}", field)
    text = dumps(value)
    size = len(text.encode())
    if size > MAX_JSON_BYTES:
        raise InvalidArgument(Reason.METADATA_TOO_LARGE,
            f"{field} is {size} bytes serialised; the limit is {MAX_JSON_BYTES} bytes (64 KiB)", field)
    return text


def check_auth_id(metadata: dict[str, Any], field: str) -> None:
    """auth_id, when present in metadata, must be a non-empty string (None deletes it in a merge)."""
    if "auth_id" not in metadata:
        return
    auth_id = metadata["auth_id"]
    if auth_id is None:
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
