"""The job objects' JSON rules: nesting depth, and decoding what the databases hold."""
from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import pytest

from manager_service.storage.jsonvalues import depth_of, dumps, loads


def test_depth_counts_containers_only() -> None:
    assert depth_of("text") == 0
    assert depth_of({}) == 1
    assert depth_of([]) == 1
    assert depth_of({"a": {}}) == 2
    assert depth_of({"a": [1, {"b": []}], "c": 2}) == 4
    assert depth_of({"scalars": 1, "only": "x", "here": None}) == 1


def test_depth_of_a_value_deeper_than_the_stack() -> None:
    value: dict[str, object] = {}
    for _ in range(5000):  # (a Python caller can build this; recursion would raise RecursionError)
        value = {"a": value}
    assert depth_of(value) == 5001


def test_loads_reads_what_json_reads() -> None:
    text = json.dumps({"auth_id": "site", "progress": {"pages": 3, "ratio": 0.5}, "list": [True, None, "é\u2028"]},
                      ensure_ascii=False)
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_loads_falls_back_for_what_orjson_refuses() -> None:
    # NaN is not JSON (orjson refuses it); Python's json module reads it, as the stores did before.
    assert math.isnan(loads('{"x": NaN}')["x"])


def test_dumps_is_compact_sorted_utf8_and_refuses_what_json_refuses() -> None:
    value = {"b": [1, 1.5, None, True], "a": {"é": "\u2028\n"}}
    assert dumps(value) == '{"a":{"é":"\u2028\\n"},"b":[1,1.5,null,true]}'
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    for bad in ({"x": math.nan}, {"x": [math.inf]}, {"x": {"y": -math.inf}}):
        with pytest.raises(ValueError):
            dumps(bad)
    # what orjson does not take is json.dumps' to write, as before
    assert dumps({"big": 2**70}) == '{"big":1180591620717411303424}'
    assert dumps({1: "key"}) == '{"1":"key"}'
    for refused in (object(), datetime.now(UTC), date(2026, 1, 1)):  # (orjson alone would write the dates)
        with pytest.raises(TypeError):
            dumps({"x": refused})
