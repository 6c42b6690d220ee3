"""Struct values a client can send that have no JSON form, and auth_id after the write: INVALID_ARGUMENT
with the field path, nothing written, the same on SQLite and PostgreSQL."""
from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.convert import struct_to_dict
from tests.support.grpc_errors import expect_error

MERGE, REPLACE = jobs_pb2.UPDATE_MODE_MERGE, jobs_pb2.UPDATE_MODE_REPLACE


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def with_kindless_value(data: dict[str, Any], *path: str) -> struct_pb2.Struct:
    """A Struct whose value at `path` has no kind set: what a client sends for a misspelt Value field."""
    message = struct(data)
    target = message
    for key in path[:-1]:
        target = target.fields[key].struct_value
    target.fields[path[-1]].Clear()
    return message


def create(manager: Any, **metadata: Any) -> jobs_pb2.Job:
    return manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="test", name="t", metadata=struct(metadata)))


def metadata_of(manager: Any, job_id: str) -> dict[str, Any]:
    return struct_to_dict(manager.client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)).metadata)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_is_invalid_with_its_path_and_nothing_is_written(manager: Any, number: float) -> None:
    job = create(manager, keep=1)
    patch = struct({"progress": {"items": [1, 2, number]}})
    expect_error(lambda: manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
        job_id=job.id, metadata=patch)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE",
        "metadata.progress.items[2]")
    expect_error(lambda: manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", config=patch)),
                 grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE", "config.progress.items[2]")
    assert metadata_of(manager, job.id) == {"keep": 1}
    # and the job takes merges afterwards (a stored NaN used to break every later merge)
    manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(job_id=job.id, metadata=struct({"b": 2})))
    assert metadata_of(manager, job.id) == {"keep": 1, "b": 2}


def test_a_value_with_no_kind_is_invalid_not_a_silent_delete(manager: Any) -> None:
    job = create(manager, auth_id="site", phase="crawl", nested={"a": 1, "b": 2})
    for path, field in ((("phase",), "metadata.phase"), (("nested", "b"), "metadata.nested.b")):
        patch = with_kindless_value({"phase": "x", "nested": {"b": 3}}, *path)
        expect_error(lambda patch=patch: manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
            job_id=job.id, metadata=patch)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE", field)
    assert metadata_of(manager, job.id) == {"auth_id": "site", "phase": "crawl", "nested": {"a": 1, "b": 2}}


def test_a_key_that_is_not_an_identifier_is_quoted_in_the_path(manager: Any) -> None:
    job = create(manager)
    patch = with_kindless_value({"a b": {"c": 1}}, "a b", "c")
    expect_error(lambda: manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
        job_id=job.id, metadata=patch)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE", 'metadata["a b"].c')


@pytest.mark.parametrize("mode", [MERGE, REPLACE])
def test_auth_id_after_the_write_is_a_non_empty_string_in_both_modes(manager: Any, mode: int) -> None:
    job = create(manager, auth_id="site")
    for bad in ({"auth_id": ""}, {"auth_id": 7}):
        expect_error(lambda bad=bad: manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
            job_id=job.id, metadata=struct(bad), mode=mode)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUTH_ID",
            "metadata.auth_id")
    null = jobs_pb2.UpdateJobMetadataRequest(job_id=job.id, metadata=struct({"auth_id": None}), mode=mode)
    if mode == REPLACE:  # would store {"auth_id": null}
        expect_error(lambda: manager.client.jobs.UpdateJobMetadata(null), grpc.StatusCode.INVALID_ARGUMENT,
                     "INVALID_AUTH_ID", "metadata.auth_id")
        assert metadata_of(manager, job.id) == {"auth_id": "site"}
    else:  # null deletes the key: after the write there is no auth_id
        manager.client.jobs.UpdateJobMetadata(null)
        assert metadata_of(manager, job.id) == {}


def test_create_refuses_a_null_auth_id(manager: Any) -> None:
    expect_error(lambda: create(manager, auth_id=None), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUTH_ID",
                 "metadata.auth_id")


def test_a_nul_character_is_refused_on_both_databases(manager: Any) -> None:
    job = create(manager, keep=1)
    for patch, field in (({"a": {"b": "x\x00y"}}, "metadata.a.b"), ({"k\x00": 1}, "metadata")):
        expect_error(lambda patch=patch: manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
            job_id=job.id, metadata=struct(patch))), grpc.StatusCode.INVALID_ARGUMENT, "NUL_CHARACTER", field)
    # a backslash followed by u0000 is text, not a NUL
    manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
        job_id=job.id, metadata=struct({"path": "C:\\u0000"})))
    assert metadata_of(manager, job.id) == {"keep": 1, "path": "C:\\u0000"}
    for name, field in (("n\x00", "name"), ("x" * 513, "name")):
        expect_error(lambda name=name: manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", name=name)),
                     grpc.StatusCode.INVALID_ARGUMENT, None, field)
    expect_error(lambda: manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t" * 65)),
                 grpc.StatusCode.INVALID_ARGUMENT, "TYPE_TOO_LONG", "type")
