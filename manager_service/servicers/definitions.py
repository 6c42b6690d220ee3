"""quaero.manager.v1.JobDefinitions."""
from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from quaero.api.manager.v1 import definitions_pb2, definitions_pb2_grpc

from ..convert import to_timestamp
from ..definitions_store import DefinitionStore
from ..grpc_common import maps_domain_errors

ACTIONS = {definitions_pb2.FAILURE_ACTION_STOP_ALL: "stop_all", definitions_pb2.FAILURE_ACTION_CONTINUE: "continue",
           definitions_pb2.FAILURE_ACTION_UNSPECIFIED: "continue"}
ACTION_TO_PROTO = {"stop_all": definitions_pb2.FAILURE_ACTION_STOP_ALL,
                   "continue": definitions_pb2.FAILURE_ACTION_CONTINUE}
OPTIONAL_CRAWL_FIELDS = ("max_depth", "max_pages", "same_site_only", "concurrency", "per_host_delay_seconds",
                         "request_timeout_seconds")
LIST_CRAWL_FIELDS = ("start_urls", "include_patterns", "exclude_patterns", "logged_out_patterns", "allowed_networks")
FLAG_CRAWL_FIELDS = ("ignore_robots_txt", "allow_private_networks")


def definition_from_proto(message: definitions_pb2.JobDefinition) -> dict[str, Any]:
    crawl: dict[str, Any] = {key: list(getattr(message.crawl, key)) for key in LIST_CRAWL_FIELDS}
    for key in OPTIONAL_CRAWL_FIELDS:
        crawl[key] = getattr(message.crawl, key) if message.crawl.HasField(key) else None  # type: ignore[arg-type]
    crawl["user_agent"] = message.crawl.user_agent
    for key in FLAG_CRAWL_FIELDS:
        crawl[key] = getattr(message.crawl, key)
    return {"id": message.id, "name": message.name, "type": message.type, "auth_id": message.auth_id,
            "crawl": crawl, "max_child_failures": message.max_child_failures,
            "failure_action": ACTIONS.get(message.failure_action, "invalid")}


def definition_to_proto(definition: dict[str, Any]) -> definitions_pb2.JobDefinition:
    crawl = definition["crawl"]
    message = definitions_pb2.JobDefinition(
        id=definition["id"], name=definition["name"], type=definition["type"], auth_id=definition["auth_id"],
        max_child_failures=definition["max_child_failures"],
        failure_action=ACTION_TO_PROTO[definition["failure_action"]])
    for key in LIST_CRAWL_FIELDS:
        getattr(message.crawl, key).extend(crawl.get(key) or [])
    for key in OPTIONAL_CRAWL_FIELDS:
        setattr(message.crawl, key, crawl[key])
    message.crawl.user_agent = crawl.get("user_agent") or ""
    for key in FLAG_CRAWL_FIELDS:
        setattr(message.crawl, key, bool(crawl.get(key)))
    to_timestamp(definition.get("created_at"), message.create_time)
    to_timestamp(definition.get("updated_at"), message.update_time)
    return message


class JobDefinitionsServicer(definitions_pb2_grpc.JobDefinitionsServicer):
    def __init__(self, store: DefinitionStore) -> None:
        self.store = store

    @maps_domain_errors
    def CreateJobDefinition(self, request: definitions_pb2.CreateJobDefinitionRequest,
                            context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return definition_to_proto(self.store.create(definition_from_proto(request.job_definition)))

    @maps_domain_errors
    def GetJobDefinition(self, request: definitions_pb2.GetJobDefinitionRequest,
                         context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return definition_to_proto(self.store.get(request.id))

    @maps_domain_errors
    def ListJobDefinitions(self, request: definitions_pb2.ListJobDefinitionsRequest,
                           context: grpc.ServicerContext) -> definitions_pb2.ListJobDefinitionsResponse:
        items, token = self.store.list_page(request.page_size, request.page_token)
        return definitions_pb2.ListJobDefinitionsResponse(
            job_definitions=[definition_to_proto(d) for d in items], next_page_token=token)

    @maps_domain_errors
    def UpdateJobDefinition(self, request: definitions_pb2.UpdateJobDefinitionRequest,
                            context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return definition_to_proto(self.store.update(definition_from_proto(request.job_definition),
                                                     request.allow_missing))

    @maps_domain_errors
    def DeleteJobDefinition(self, request: definitions_pb2.DeleteJobDefinitionRequest,
                            context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete(request.id)
        return empty_pb2.Empty()
