"""quaero.manager.v1.JobDefinitions: proto <-> Definition (quaero.convert), checks in quaero.crawl_spec."""
from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2

from quaero.api.manager.v1 import definitions_pb2, definitions_pb2_grpc
from quaero.convert import definition_mapping_from_proto, definition_to_proto, message_size, to_timestamp

from ..storage.definitions import DefinitionStore, StoredDefinition


def stored_to_proto(stored: StoredDefinition, now: datetime | None = None) -> definitions_pb2.JobDefinition:
    message = definition_to_proto(stored.definition, stored.created_at, stored.updated_at)
    message.etag = stored.etag
    schedule = stored.definition.schedule
    if schedule is not None and not schedule.paused:
        for moment in schedule.next_fires(now or datetime.now(UTC)):
            to_timestamp(moment, message.next_fire_times.add())
    return message


class JobDefinitionsServicer(definitions_pb2_grpc.JobDefinitionsServicer):
    def __init__(self, store: DefinitionStore) -> None:
        self.store = store

    def CreateJobDefinition(self, request: definitions_pb2.CreateJobDefinitionRequest,
                            context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return stored_to_proto(self.store.create(definition_mapping_from_proto(request.job_definition)),
                               self.store.clock.now())

    def GetJobDefinition(self, request: definitions_pb2.GetJobDefinitionRequest,
                         context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return stored_to_proto(self.store.get(request.id), self.store.clock.now())

    def ListJobDefinitions(self, request: definitions_pb2.ListJobDefinitionsRequest,
                           context: grpc.ServicerContext) -> definitions_pb2.ListJobDefinitionsResponse:
        now = self.store.clock.now()
        items, token = self.store.list_page(request.page_size, request.page_token).cut(
            lambda stored: stored_to_proto(stored, now), message_size)
        return definitions_pb2.ListJobDefinitionsResponse(job_definitions=items, next_page_token=token)

    def UpdateJobDefinition(self, request: definitions_pb2.UpdateJobDefinitionRequest,
                            context: grpc.ServicerContext) -> definitions_pb2.JobDefinition:
        return stored_to_proto(self.store.update(definition_mapping_from_proto(request.job_definition),
                                                 request.allow_missing, etag=request.job_definition.etag),
                               self.store.clock.now())

    def DeleteJobDefinition(self, request: definitions_pb2.DeleteJobDefinitionRequest,
                            context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete(request.id, etag=request.etag)
        return empty_pb2.Empty()
