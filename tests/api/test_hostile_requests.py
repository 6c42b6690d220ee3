"""No RPC answers INTERNAL (or UNKNOWN) to anything a client can send. Every field of every manager request
(and of the messages inside it) is set, one at a time, to hostile values, on top of a request whose ids
name real rows, so that the call reaches storage; on SQLite and on PostgreSQL."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import descriptor, struct_pb2
from google.protobuf.message import Message

from manager_service.access import MANAGER_ACCESS
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, documents_pb2, jobs_pb2
from quaero.rpc.roles import Role
from quaero.testing.harness import RunningManager

STRINGS = ["x" * 5000, "\x00", "a\x00b", "line\n", " ", "../../etc/passwd", "{3F2B8C1E-0D4A-4C6B-9A51-2F7E8D9C0B1A}",
           "é" * 700, "\U0001f600" * 100, "%00", "http://[::1", "-1"]
INTS = {descriptor.FieldDescriptor.TYPE_INT32: [-1, -(2**31), 2**31 - 1],
        descriptor.FieldDescriptor.TYPE_INT64: [-1, -(2**63), 2**63 - 1],
        descriptor.FieldDescriptor.TYPE_DOUBLE: [-1.0, math.nan, math.inf, 1e308]}
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICES = [jobs_pb2.DESCRIPTOR.services_by_name["JobManager"], auth_pb2.DESCRIPTOR.services_by_name["AuthStore"],
            definitions_pb2.DESCRIPTOR.services_by_name["JobDefinitions"],
            documents_pb2.DESCRIPTOR.services_by_name["Documents"]]


def _struct_values() -> list[struct_pb2.Struct]:
    nan = struct_pb2.Struct()
    nan.update({"n": math.nan})
    kindless = struct_pb2.Struct()
    kindless.fields["k"].Clear()
    nul = struct_pb2.Struct()
    nul.update({"a\x00": "b\x00"})
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"d": deep}
    too_deep = struct_pb2.Struct()
    too_deep.update(deep)
    null_auth = struct_pb2.Struct()
    null_auth.update({"auth_id": None, "crawl": {"start_urls": [None, 5, "x"]}})
    return [nan, kindless, nul, too_deep, null_auth]


def mutations(message: Message, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Message]]:
    """(field path, a copy of message with that field set to one hostile value), for every field."""
    for field in message.DESCRIPTOR.fields:
        path = prefix + field.name
        repeated = field.is_repeated
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Struct":
                for value in _struct_values():
                    copy = type(message)()
                    copy.CopyFrom(message)
                    getattr(copy, field.name).CopyFrom(value)
                    yield path, copy
                continue
            if (field.message_type.full_name.startswith("google.protobuf.") or depth >= 2
                    or field.message_type.GetOptions().map_entry):
                continue
            inner = field.message_type._concrete_class()
            if not repeated and message.HasField(field.name):
                inner.CopyFrom(getattr(message, field.name))
            for inner_path, changed in mutations(inner, path + ".", depth + 1):
                copy = type(message)()
                copy.CopyFrom(message)
                if repeated:
                    getattr(copy, field.name).add().CopyFrom(changed)
                else:
                    getattr(copy, field.name).CopyFrom(changed)
                yield inner_path, copy
            continue
        if field.type == descriptor.FieldDescriptor.TYPE_STRING:
            values: list[Any] = STRINGS
        elif field.type in INTS:
            values = INTS[field.type]
        elif field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            values = [99, -5]
        else:
            continue
        for value in values:
            copy = type(message)()
            copy.CopyFrom(message)
            if repeated:
                getattr(copy, field.name).extend([value] * (300 if field.type == descriptor.FieldDescriptor.TYPE_STRING
                                                            and len(value) < 10 else 1))
            else:
                setattr(copy, field.name, value)
            yield path, copy


def seed(manager: RunningManager) -> dict[str, str]:
    """Real rows for the ids of the baseline requests."""
    client = manager.connect()
    executor = manager.connect_as_executor()
    parent = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="crawl", name="p"))
    child = client.jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(
        parent_id=parent.id, children=[jobs_pb2.ChildJobSpec(type="crawl_page", name="c", dedup_key="k")])).jobs[0]
    lease = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w", max_jobs=1)).leased_jobs[0].lease
    credentials = client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(
        id="cred", site_domain="example.com", cookies=[auth_pb2.Cookie(name="sid", value="v", domain="example.com")]))
    definition = client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
        job_definition=definitions_pb2.JobDefinition(id="def", name="d", type="crawler", auth_id="cred",
                                                     crawl=definitions_pb2.CrawlConfig(start_urls=["https://example.com/"]))))
    client.close()
    executor.close()
    return {"job": parent.id, "child": child.id, "lease": lease.lease_token, "cred": credentials.id,
            "definition": definition.id}


def baseline(method: descriptor.MethodDescriptor, ids: dict[str, str]) -> Message:
    request = method.input_type._concrete_class()
    service = method.containing_service.name
    names = {field.name for field in request.DESCRIPTOR.fields}
    for name, value in (("job_id", ids["child"] if "Lease" in method.name else ids["job"]),
                        ("parent_id", ids["job"]), ("parent_job_id", ids["job"]), ("lease_token", ids["lease"]),
                        ("definition_id", ids["definition"])):
        if name in names:
            setattr(request, name, value)
    if "id" in names:
        request.id = ids["cred"] if service == "AuthStore" else ids["definition"]
    if "job_definition" in names:
        request.job_definition.CopyFrom(definitions_pb2.JobDefinition(
            id=ids["definition"], name="d", type="crawler", crawl=definitions_pb2.CrawlConfig(
                start_urls=["https://example.com/"])))
    if method.name == "PutCredentials":
        request.site_domain = "example.com"
        request.cookies.add(name="sid", value="v", domain="example.com")
    return request


def call(clients: dict[Role, Any], method: descriptor.MethodDescriptor, request: Message) -> None:
    full_name = f"/{method.containing_service.full_name}/{method.name}"
    client = clients[Role.OPERATOR if MANAGER_ACCESS.allows(full_name, Role.OPERATOR) else Role.EXECUTOR]
    stub = {"JobManager": client.jobs, "AuthStore": client.auth, "JobDefinitions": client.definitions,
            "Documents": client.documents}[method.containing_service.name]
    rpc = getattr(stub, method.name)
    if method.server_streaming:
        for _ in rpc(request, timeout=1):
            pass
    else:
        rpc(request, timeout=10)


def test_no_request_field_can_make_a_manager_rpc_answer_internal(manager: RunningManager) -> None:
    ids = seed(manager)
    clients = {Role.OPERATOR: manager.connect(), Role.EXECUTOR: manager.connect_as_executor()}
    failures: list[str] = []
    calls = 0
    try:
        for service in SERVICES:
            for method in service.methods:
                if method.name in ("DeleteJobDefinition", "DeleteCredentials"):
                    continue  # they succeed on the baseline and would remove the rows the rest need
                base = baseline(method, ids)
                for path, request in [("(baseline)", base), *mutations(base)]:
                    calls += 1
                    try:
                        call(clients, method, request)
                    except grpc.RpcError as error:
                        if error.code() in REFUSED:
                            failures.append(f"{method.name} {path}={_shown(request, path)}: {error.code().name} "
                                            f"{error.details()}")
    finally:
        for client in clients.values():
            client.close()
    assert calls > 1000
    assert not failures, f"{len(failures)} of {calls} calls answered INTERNAL/UNKNOWN:\n" + "\n".join(failures[:40])


def _shown(request: Message, path: str) -> str:
    text = str(request).replace("\n", " ")
    return text[:160]
