"""quaero.manager.v1.AuthStore: stored credentials. Only GetCredentials puts cookie values on the wire."""
from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf import empty_pb2

from quaero.api.manager.v1 import auth_pb2, auth_pb2_grpc
from quaero.convert import add_cookie, cookie_from_proto, message_size, to_timestamp

from ..storage.credentials import Credentials, CredentialStore


def info_to_proto(credentials: Credentials) -> auth_pb2.CredentialsInfo:
    info = auth_pb2.CredentialsInfo(id=credentials.id, site_domain=credentials.site_domain,
                                    base_url=credentials.base_url, user_agent=credentials.user_agent)
    expiries = []
    for entry in credentials.index:
        described = info.cookies.add(name=entry["name"], domain=entry["domain"],
                                     include_subdomains=not entry["host_only"],
                                     path=entry["path"], secure=entry["secure"])
        if entry.get("expires"):
            expiries.append(datetime.fromisoformat(entry["expires"]))
            to_timestamp(expiries[-1], described.expire_time)
    if expiries:
        to_timestamp(min(expiries), info.earliest_expire_time)
    to_timestamp(credentials.refreshed_at, info.refresh_time)
    info.refreshed_by_job_id = credentials.refreshed_by or ""
    for refused, reason in credentials.rejected:
        info.rejected_cookies.add(name=refused.name, domain=refused.domain, reason=reason)
    to_timestamp(credentials.created_at, info.create_time)
    to_timestamp(credentials.updated_at, info.update_time)
    return info


class AuthStoreServicer(auth_pb2_grpc.AuthStoreServicer):
    def __init__(self, store: CredentialStore) -> None:
        self.store = store

    def PutCredentials(self, request: auth_pb2.PutCredentialsRequest,
                       context: grpc.ServicerContext) -> auth_pb2.CredentialsInfo:
        return info_to_proto(self.store.put(request.id, request.site_domain, request.base_url, request.user_agent,
                                            [cookie_from_proto(c) for c in request.cookies]))

    def GetCredentials(self, request: auth_pb2.GetCredentialsRequest,
                       context: grpc.ServicerContext) -> auth_pb2.Credentials:
        credentials = self.store.get(request.id)
        result = auth_pb2.Credentials(id=credentials.id, site_domain=credentials.site_domain,
                                      base_url=credentials.base_url, user_agent=credentials.user_agent)
        for cookie in credentials.cookies:
            add_cookie(result.cookies, cookie)
        return result

    def ListCredentials(self, request: auth_pb2.ListCredentialsRequest,
                        context: grpc.ServicerContext) -> auth_pb2.ListCredentialsResponse:
        items, token = self.store.list_page(request.page_size, request.page_token).cut(info_to_proto, message_size)
        return auth_pb2.ListCredentialsResponse(credentials=items, next_page_token=token)

    def DeleteCredentials(self, request: auth_pb2.DeleteCredentialsRequest,
                          context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete(request.id)
        return empty_pb2.Empty()
