"""AuthStore at servicer level with pytest-grpc's real-server fixtures, on a real SQLite file."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from manager_service.servicers.credentials import AuthStoreServicer
from manager_service.storage.clock import SYSTEM
from manager_service.storage.credentials import CredentialStore
from manager_service.storage.db import connect, migrate
from manager_service.storage.secretbox import SecretBox
from quaero.api.manager.v1 import auth_pb2, auth_pb2_grpc
from quaero.rpc.interceptors import ExceptionToStatus
from tests.support.grpc_errors import expect_error

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def database_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("authstore") / "auth.db"


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[Any]:
    """The interceptor the manager installs: errors become status with ErrorInfo/BadRequest details."""
    return [ExceptionToStatus()]


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return auth_pb2_grpc.add_AuthStoreServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(database_path: Path) -> Iterator[AuthStoreServicer]:
    db = connect(f"sqlite:///{database_path}")
    migrate(db)
    yield AuthStoreServicer(CredentialStore(db, SecretBox(KEY), SYSTEM))
    db.dispose()


@pytest.fixture(scope="module")
def grpc_stub_cls(grpc_channel: grpc.Channel) -> Any:
    return auth_pb2_grpc.AuthStoreStub


def put(stub: Any, *cookies: auth_pb2.Cookie, id: str = "", site: str = "app.example.com") -> auth_pb2.CredentialsInfo:
    return stub.PutCredentials(auth_pb2.PutCredentialsRequest(id=id, site_domain=site, cookies=list(cookies)))


def test_put_returns_no_values_and_get_returns_them(grpc_stub: Any) -> None:
    info = put(grpc_stub, auth_pb2.Cookie(name="sid", value="value-1", domain="app.example.com"),
               id="round-trip")
    assert info.id == "round-trip" and [c.name for c in info.cookies] == ["sid"]
    assert "value-1" not in str(info)
    got = grpc_stub.GetCredentials(auth_pb2.GetCredentialsRequest(id="round-trip"))
    assert [(c.name, c.value, c.include_subdomains, c.path) for c in got.cookies] == [("sid", "value-1", False, "/")]
    assert "value-1" not in str(grpc_stub.ListCredentials(auth_pb2.ListCredentialsRequest()))


def test_values_are_encrypted_at_rest(grpc_stub: Any, database_path: Path) -> None:
    put(grpc_stub, auth_pb2.Cookie(name="sid", value="plain-text-marker-42", domain="app.example.com"), id="enc")
    raw = database_path.read_bytes() + (database_path.with_name("auth.db-wal").read_bytes()
                                        if database_path.with_name("auth.db-wal").exists() else b"")
    assert b"plain-text-marker-42" not in raw


@pytest.mark.parametrize("bad,why", [
    (auth_pb2.Cookie(name="sid", value="v", domain="com", include_subdomains=True), "public suffix"),
    (auth_pb2.Cookie(name="sid", value="v", domain="co.uk", include_subdomains=True), "public suffix"),
    (auth_pb2.Cookie(name="sid", value="v", domain="github.io", include_subdomains=True), "public suffix"),
    (auth_pb2.Cookie(name="__Host-x", value="v", domain="app.example.com", secure=False), "__Host-"),
    (auth_pb2.Cookie(name="__Host-x", value="v", domain="example.com", include_subdomains=True, secure=True), "__Host-"),
    (auth_pb2.Cookie(name="__Secure-x", value="v", domain="app.example.com", secure=False), "__Secure-"),
    (auth_pb2.Cookie(name="sid", value="a;b", domain="app.example.com"), "';'"),
    (auth_pb2.Cookie(name="sid", value="a\nb", domain="app.example.com"), "control characters"),
    (auth_pb2.Cookie(name="sid", value="caf\u00e9-session", domain="app.example.com"), "non-ASCII"),
    (auth_pb2.Cookie(name="sid", value="two words", domain="app.example.com"), "space"),
    (auth_pb2.Cookie(name="sid", value='{"a":1,"b":2}', domain="app.example.com"), "RFC 6265"),
    (auth_pb2.Cookie(name="sid", value="back\\slash", domain="app.example.com"), "RFC 6265"),
    (auth_pb2.Cookie(name="bad name", value="v", domain="app.example.com"), "name"),
    (auth_pb2.Cookie(name="a=b", value="v", domain="app.example.com"), "name"),
    (auth_pb2.Cookie(name="sid", value="v", domain="evil.test"), "not part of app.example.com"),
    (auth_pb2.Cookie(name="sid", value="v", domain="notexample.com"), "not part of app.example.com"),
    (auth_pb2.Cookie(name="sid", value="x" * 5000, domain="app.example.com"), "4096"),
    (auth_pb2.Cookie(name="sid", value="v", domain="10.0.0.1", include_subdomains=True), "IP address"),
])
def test_cookies_that_break_the_rules_are_refused_by_name_never_by_value(grpc_stub: Any, bad: auth_pb2.Cookie,
                                                                         why: str) -> None:
    good = auth_pb2.Cookie(name="ok", value="fine", domain="app.example.com")
    info = put(grpc_stub, good, bad, id="mixed")
    assert [c.name for c in info.cookies] == ["ok"]
    [refused] = info.rejected_cookies
    assert refused.name == bad.name and why in refused.reason
    if len(bad.value) > 1:
        assert bad.value not in refused.reason
    error = expect_error(lambda: put(grpc_stub, bad), grpc.StatusCode.INVALID_ARGUMENT, "NO_VALID_COOKIES", "cookies")
    assert bad.name in error.details() and (len(bad.value) < 2 or bad.value not in error.details())


def test_unknown_credentials_are_not_found(grpc_stub: Any) -> None:
    expect_error(lambda: grpc_stub.GetCredentials(auth_pb2.GetCredentialsRequest(id="nope")),
                 grpc.StatusCode.NOT_FOUND, "CREDENTIALS_NOT_FOUND")
    expect_error(lambda: grpc_stub.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(id="nope")),
                 grpc.StatusCode.NOT_FOUND, "CREDENTIALS_NOT_FOUND")


def test_a_different_key_cannot_read_the_values(database_path: Path, grpc_stub: Any) -> None:
    put(grpc_stub, auth_pb2.Cookie(name="sid", value="v", domain="app.example.com"), id="keyed")
    db = connect(f"sqlite:///{database_path}")
    try:
        servicer_store = CredentialStore(db, SecretBox(bytes(32)), SYSTEM)
        from quaero.errors import FailedPrecondition

        with pytest.raises(FailedPrecondition) as caught:
            servicer_store.get("keyed")
        assert caught.value.reason == "SECRET_KEY_MISMATCH"
    finally:
        db.dispose()


def test_a_quoted_value_of_cookie_octets_is_kept(grpc_stub: Any) -> None:
    info = put(grpc_stub, auth_pb2.Cookie(name="q", value='"abc=def"', domain="app.example.com"), id="quoted")
    assert [c.name for c in info.cookies] == ["q"] and not info.rejected_cookies


def test_a_parent_domain_cookie_and_a_subdomain_cookie_belong_to_the_site(grpc_stub: Any) -> None:
    info = put(grpc_stub, auth_pb2.Cookie(name="d", value="1", domain="example.com", include_subdomains=True),
               auth_pb2.Cookie(name="s", value="2", domain="eu.app.example.com"), id="family")
    assert sorted(c.name for c in info.cookies) == ["d", "s"] and not info.rejected_cookies


def test_an_expiry_past_400_days_is_brought_back_to_400_days(grpc_stub: Any) -> None:
    far = auth_pb2.Cookie(name="far", value="v", domain="app.example.com")
    far.expire_time.FromDatetime(datetime(2100, 1, 1, tzinfo=UTC))
    put(grpc_stub, far, id="far-future")
    [stored] = grpc_stub.GetCredentials(auth_pb2.GetCredentialsRequest(id="far-future")).cookies
    expires = stored.expire_time.ToDatetime(tzinfo=UTC)
    assert timedelta(days=399) < expires - datetime.now(UTC) <= timedelta(days=400, seconds=5)


def test_more_than_180_cookies_for_one_domain_are_refused_by_name(grpc_stub: Any) -> None:
    cookies = [auth_pb2.Cookie(name=f"c{n}", value="v", domain="app.example.com") for n in range(200)]
    info = put(grpc_stub, *cookies, id="many")
    assert len(info.cookies) == 180 and len(info.rejected_cookies) == 20
    assert all("more than 180" in r.reason for r in info.rejected_cookies)
    assert {r.name for r in info.rejected_cookies} == {f"c{n}" for n in range(180, 200)}


@pytest.mark.parametrize("request_fields,reason,field", [
    ({"site_domain": "com"}, "INVALID_SITE_DOMAIN", "site_domain"),
    ({"site_domain": "app.example.com", "user_agent": "Mozilla\r\nX-Injected: 1"}, "INVALID_USER_AGENT", "user_agent"),
    ({"site_domain": "app.example.com", "id": "ends-in-newline\n"}, "INVALID_CREDENTIALS_ID", "id"),
])
def test_bad_credentials_requests_are_invalid_argument(grpc_stub: Any, request_fields: dict[str, str], reason: str,
                                                       field: str) -> None:
    request = auth_pb2.PutCredentialsRequest(cookies=[auth_pb2.Cookie(name="sid", value="v", domain="app.example.com")],
                                             **request_fields)
    expect_error(lambda: grpc_stub.PutCredentials(request), grpc.StatusCode.INVALID_ARGUMENT, reason, field)
