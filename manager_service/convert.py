"""proto <-> Python values: Struct <-> dict and Timestamp <-> datetime."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2


def value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        # Struct has only doubles; keep integers integers so {"count": 3} round-trips as 3.
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: value_to_python(value) for key, value in struct.fields.items()}


def dict_to_struct(data: dict[str, Any] | None, target: struct_pb2.Struct | None = None) -> struct_pb2.Struct:
    struct = target if target is not None else struct_pb2.Struct()
    if data:
        struct.update(data)
    return struct


def to_timestamp(moment: datetime | None, target: timestamp_pb2.Timestamp) -> None:
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        target.FromDatetime(moment)


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
