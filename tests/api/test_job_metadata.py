"""UpdateJobMetadata and friends through gRPC, on SQLite and on PostgreSQL."""
from __future__ import annotations

import random
import threading
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from manager_service.storage.jsonvalues import merge_patch
from quaero.api.manager.v1 import jobs_pb2
from quaero.convert import struct_to_dict
from tests.support.grpc_errors import expect_error

MERGE, REPLACE = jobs_pb2.UPDATE_MODE_MERGE, jobs_pb2.UPDATE_MODE_REPLACE


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def new_job(manager: Any, **metadata: Any) -> jobs_pb2.Job:
    return manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="test", name="t", metadata=struct(metadata)))


def update(manager: Any, job_id: str, data: dict[str, Any], mode: int = MERGE, etag: str = "") -> jobs_pb2.Job:
    return manager.client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
        job_id=job_id, metadata=struct(data), mode=mode, etag=etag))


def metadata_of(manager: Any, job_id: str) -> dict[str, Any]:
    return struct_to_dict(manager.client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)).metadata)


def test_merge_is_rfc7396_nested_objects_merge_null_deletes_arrays_replace(manager: Any) -> None:
    job = new_job(manager, a={"b": 1, "c": {"d": 2, "e": 3}}, list=[1, 2, 3], gone="x", keep=True)
    updated = update(manager, job.id, {"a": {"c": {"d": 20, "e": None}, "f": "new"}, "list": [9], "gone": None,
                                       "added": {"x": None, "y": 1}})
    expected = {"a": {"b": 1, "c": {"d": 20}, "f": "new"}, "list": [9], "keep": True, "added": {"y": 1}}
    assert struct_to_dict(updated.metadata) == expected
    assert metadata_of(manager, job.id) == expected


def test_merge_matches_the_reference_implementation_on_random_patches(manager: Any) -> None:
    rng = random.Random(7)

    def value(depth: int) -> Any:
        kind = rng.choice(["obj", "obj", "null", "num", "str", "list", "bool"] if depth < 3 else ["num", "str", "null"])
        if kind == "obj":
            return {rng.choice("abcde"): value(depth + 1) for _ in range(rng.randint(0, 3))}
        return {"null": None, "num": rng.randint(0, 9), "str": rng.choice(["x", "y"]), "bool": True,
                "list": [rng.randint(0, 3)]}.get(kind)

    job = new_job(manager)
    expected: dict[str, Any] = {}
    for _ in range(150):
        patch = {rng.choice("abcdef"): value(1) for _ in range(rng.randint(1, 4))}
        expected = merge_patch(expected, patch)
        assert struct_to_dict(update(manager, job.id, patch).metadata) == expected


def test_merge_with_keys_that_need_quoting(manager: Any) -> None:
    # Keys reach PostgreSQL as parameters (a text[] of the keys a patch deletes, and each object's key):
    # quotes, backslashes, braces, commas, spaces, NULL, the empty key and non-ASCII must all survive.
    keys = ['quo"te', "back\\slash", "{brace}", "com,ma", " space ", "NULL", "", "é ü", "a'b"]
    job = new_job(manager, **{key: {"inner": key, "other": 1} for key in keys}, keep=1)
    expected = struct_to_dict(job.metadata)
    for index, key in enumerate(keys):
        patch = {key: None} if index % 2 else {key: {"other": None, key: [key]}}
        expected = merge_patch(expected, patch)
        assert struct_to_dict(update(manager, job.id, patch).metadata) == expected
    assert metadata_of(manager, job.id) == expected
    # all deleted at once, in one patch
    patch = dict.fromkeys(keys)
    assert struct_to_dict(update(manager, job.id, patch).metadata) == {"keep": 1}


def test_replace_stores_exactly_the_object_sent(manager: Any) -> None:
    job = new_job(manager, old={"x": 1}, other=2)
    updated = update(manager, job.id, {"only": {"this": [1, {"n": None}]}}, mode=REPLACE)
    assert struct_to_dict(updated.metadata) == {"only": {"this": [1, {"n": None}]}}
    assert metadata_of(manager, job.id) == {"only": {"this": [1, {"n": None}]}}


def test_metadata_etag_changes_on_every_metadata_write_and_a_stale_one_is_aborted_without_writing(
        manager: Any) -> None:
    job = new_job(manager, v=0)
    first = update(manager, job.id, {"v": 1}, etag=job.metadata_etag)
    assert first.metadata_etag != job.metadata_etag and first.etag != job.etag
    second = update(manager, job.id, {"v": 2})
    assert second.metadata_etag not in (job.metadata_etag, first.metadata_etag)
    error = expect_error(lambda: update(manager, job.id, {"v": 99}, etag=first.metadata_etag), grpc.StatusCode.ABORTED,
                         "ETAG_MISMATCH", "etag")
    assert "metadata" in error.details()
    expect_error(lambda: update(manager, job.id, {"v": 99}, mode=REPLACE, etag=first.metadata_etag),
                 grpc.StatusCode.ABORTED)
    assert metadata_of(manager, job.id) == {"v": 2}


def test_progress_and_status_updates_leave_the_metadata_etag_alone(manager: Any) -> None:
    # A running parent's progress moves all the time: a conditional metadata write must still succeed.
    job = new_job(manager, phase="start")
    manager.client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=job.id,
                                                                        status=jobs_pb2.JOB_STATUS_RUNNING))
    for n in range(3):
        moved = manager.client.jobs.UpdateJobProgress(jobs_pb2.UpdateJobProgressRequest(
            job_id=job.id, progress_current=n, progress_total=10))
    assert moved.etag != job.etag and moved.metadata_etag == job.metadata_etag
    updated = update(manager, job.id, {"phase": "crawl"}, etag=job.metadata_etag)
    assert struct_to_dict(updated.metadata) == {"phase": "crawl"}
    # the job's own etag still guards the whole job (UpdateJobStatus)
    expect_error(lambda: manager.client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(
        job_id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, etag=job.etag)), grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


def test_update_returns_the_whole_updated_job(manager: Any) -> None:
    job = new_job(manager)
    updated = update(manager, job.id, {"auth_id": "site-a", "phase": "execution"})
    assert updated.id == job.id and updated.type == "test" and updated.status == jobs_pb2.JOB_STATUS_PENDING
    assert updated.update_time.ToDatetime() >= job.update_time.ToDatetime()


@pytest.mark.parametrize("bad", [{"auth_id": ""}, {"auth_id": "   "}, {"auth_id": 5}, {"auth_id": {"x": 1}},
                                 {"auth_id": [1]}, {"auth_id": True}])
def test_auth_id_must_be_a_non_empty_string(manager: Any, bad: dict[str, Any]) -> None:
    job = new_job(manager, auth_id="good")
    expect_error(lambda: update(manager, job.id, bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUTH_ID",
                 "metadata.auth_id")
    assert metadata_of(manager, job.id) == {"auth_id": "good"}


def test_metadata_over_64_kib_is_refused_and_nothing_is_written(manager: Any) -> None:
    job = new_job(manager, keep=1)
    error = expect_error(lambda: update(manager, job.id, {"blob": "x" * (64 * 1024)}),
                         grpc.StatusCode.INVALID_ARGUMENT, "METADATA_TOO_LARGE", "metadata")
    assert "64 KiB" in error.details()
    assert metadata_of(manager, job.id) == {"keep": 1}


def test_a_merge_whose_result_would_pass_64_kib_is_refused(manager: Any) -> None:
    job = new_job(manager)
    update(manager, job.id, {"a": "x" * 40_000})
    expect_error(lambda: update(manager, job.id, {"b": "y" * 40_000}), grpc.StatusCode.INVALID_ARGUMENT,
                 "METADATA_TOO_LARGE")
    assert set(metadata_of(manager, job.id)) == {"a"}


def test_metadata_deeper_than_32_levels_is_refused(manager: Any) -> None:
    job = new_job(manager)
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(32):
        deep = {"n": deep}
    expect_error(lambda: update(manager, job.id, deep), grpc.StatusCode.INVALID_ARGUMENT, "METADATA_TOO_DEEP",
                 "metadata")
    ok: dict[str, Any] = {"leaf": 1}
    for _ in range(31):
        ok = {"n": ok}
    update(manager, job.id, ok)  # exactly 32 levels is allowed


def test_unknown_job_is_not_found_and_malformed_id_is_invalid(manager: Any) -> None:
    expect_error(lambda: update(manager, "00000000-0000-4000-8000-000000000000", {"a": 1}),
                 grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    expect_error(lambda: update(manager, "not-a-uuid", {"a": 1}), grpc.StatusCode.INVALID_ARGUMENT,
                 "INVALID_JOB_ID", "job_id")
    expect_error(lambda: manager.client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id="../etc")),
                 grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_ID", "job_id")


def test_concurrent_merges_of_distinct_keys_lose_nothing(manager: Any) -> None:
    job = new_job(manager)
    clients, per_client = 8, 50  # through gRPC; tests/storage/test_merges.py puts more weight on the database
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        client = manager.connect()
        try:
            for n in range(per_client):
                client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(
                    job_id=job.id, metadata=struct({f"c{index}": {f"k{n}": n}})), timeout=30)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    metadata = metadata_of(manager, job.id)
    keys = sum(len(inner) for inner in metadata.values())
    assert keys == clients * per_client
    assert metadata["c7"]["k49"] == 49


def test_update_job_config_merges_like_metadata(manager: Any) -> None:
    job = manager.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", config=struct({"a": {"b": 1}, "z": 1})))
    updated = manager.client.jobs.UpdateJobConfig(jobs_pb2.UpdateJobConfigRequest(
        job_id=job.id, config=struct({"a": {"c": 2}, "z": None})))
    assert struct_to_dict(updated.config) == {"a": {"b": 1, "c": 2}}


def test_the_manager_recovers_when_postgresql_drops_its_connections(postgres_url: str, admin_url: str,
                                                                   tmp_path: Any) -> None:
    import psycopg

    from quaero.testing.harness import start_manager

    running = start_manager(tmp_path / "data", postgres_url)
    try:
        job = new_job(running, a=1)
        update(running, job.id, {"b": 2})
        database = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(admin_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
        assert killed and killed[0] > 0
        assert metadata_of(running, job.id) == {"a": 1, "b": 2}
        assert struct_to_dict(update(running, job.id, {"c": 3}).metadata) == {"a": 1, "b": 2, "c": 3}
        # Every other kind of call, each right after the server dropped every connection again: each
        # one succeeds (the manager runs it again on a new connection), none answers UNAVAILABLE.
        jobs = running.client.jobs
        calls = [lambda: jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=5)),
                 lambda: jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", parent_id=job.id)),
                 lambda: jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=job.id)),
                 lambda: jobs.AddJobLog(jobs_pb2.AddJobLogRequest(job_id=job.id, message="after a drop")),
                 lambda: jobs.UpdateJobProgress(jobs_pb2.UpdateJobProgressRequest(job_id=job.id, progress_total=3))]
        for call in calls:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND "
                              "pid <> pg_backend_pid()", (database,))
            call()
        logs = jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=job.id)).logs
        assert [log.message for log in logs] == ["after a drop"]
    finally:
        running.close()
