"""quaero.manager.v1.AuthStore. Only GetCredentials puts cookie values on the wire."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf import empty_pb2

from quaero.api.manager.v1 import auth_pb2, auth_pb2_grpc

from ..auth_store import AuthStore
from ..convert import add_cookie, cookie_from_proto, to_timestamp
from ..cookies import StoredCookie
from ..grpc_common import maps_domain_errors


def info_to_proto(row: Any, rejected: list[tuple[StoredCookie, str]] | None = None) -> auth_pb2.CredentialsInfo:
    info = auth_pb2.CredentialsInfo(id=row["id"], site_domain=row["site_domain"], base_url=row["base_url"],
                                    user_agent=row["user_agent"])
    for entry in row["cookie_index"]:
        described = info.cookies.add(name=entry["name"], domain=entry["domain"], host_only=entry["host_only"],
                                     path=entry["path"], secure=entry["secure"])
        if entry.get("expires"):
            to_timestamp(datetime.fromisoformat(entry["expires"]), described.expire_time)
    for refused, reason in rejected or []:
        info.rejected_cookies.add(name=refused.name, domain=refused.domain, reason=reason)
    to_timestamp(row["created_at"], info.create_time)
    to_timestamp(row["updated_at"], info.update_time)
    return info


class AuthStoreServicer(auth_pb2_grpc.AuthStoreServicer):
    def __init__(self, store: AuthStore) -> None:
        self.store = store

    @maps_domain_errors
    def PutCredentials(self, request: auth_pb2.PutCredentialsRequest,
                       context: grpc.ServicerContext) -> auth_pb2.CredentialsInfo:
        row, rejected = self.store.put(request.id, request.site_domain, request.base_url, request.user_agent,
                                       [cookie_from_proto(c) for c in request.cookies])
        return info_to_proto(row, rejected)

    @maps_domain_errors
    def GetCredentials(self, request: auth_pb2.GetCredentialsRequest,
                       context: grpc.ServicerContext) -> auth_pb2.Credentials:
        row, cookies = self.store.get(request.id)
        result = auth_pb2.Credentials(id=row["id"], site_domain=row["site_domain"], base_url=row["base_url"],
                                      user_agent=row["user_agent"])
        for cookie in cookies:
            add_cookie(result.cookies, cookie)
        return result

    @maps_domain_errors
    def ListCredentials(self, request: auth_pb2.ListCredentialsRequest,
                        context: grpc.ServicerContext) -> auth_pb2.ListCredentialsResponse:
        rows, token = self.store.list_page(request.page_size, request.page_token)
        return auth_pb2.ListCredentialsResponse(credentials=[info_to_proto(r) for r in rows], next_page_token=token)

    @maps_domain_errors
    def DeleteCredentials(self, request: auth_pb2.DeleteCredentialsRequest,
                          context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete(request.id)
        return empty_pb2.Empty()
