"""Credentials: names, sites, cookie names, earliest expiry and last refresh (never a value: the operator
token cannot read one, and nothing here asks); import a browser's cookie export; delete."""
from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from quaero.api.manager.v1 import auth_pb2
from quaero.convert import put_credentials_request
from quaero.cookies.files import CookieFileError, parse_cookie_text

from ..guard import MAX_FORM_BYTES, state_changing
from ..views import page
from .common import PAGE_SIZE, after_post, clients, form_text, param


async def credentials_list(request: Request, problem: str = "", status_code: int = 200,
                           stored: auth_pb2.CredentialsInfo | None = None) -> Response:
    answer = await clients(request).auth.ListCredentials(auth_pb2.ListCredentialsRequest(
        page_size=PAGE_SIZE, page_token=param(request, "page", 2000)))
    return page(request, "credentials.html", status_code, credentials=answer.credentials,
                next_page=answer.next_page_token, problem=problem, stored=stored)


@state_changing
async def credentials_import(request: Request) -> Response:
    upload = request.state.form.get("file")
    site = form_text(request, "site", 253)
    if not site:
        return await credentials_list(request, "Name the site the cookies are for (e.g. example.com).", 400)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await credentials_list(request, "Choose a cookie export file (browser JSON, cookies.txt or a "
                                               "Playwright storageState).", 400)
    data = await upload.read(MAX_FORM_BYTES + 1)
    try:
        if len(data) > MAX_FORM_BYTES:
            raise CookieFileError(f"{upload.filename}: larger than {MAX_FORM_BYTES // 1024 // 1024} MiB")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CookieFileError(f"{upload.filename}: not a text file") from None
        _kind, cookies = parse_cookie_text(text, upload.filename)
        if not cookies:
            raise CookieFileError(f"{upload.filename}: holds no cookies")
        put = put_credentials_request(site, cookies, form_text(request, "auth_id", 200),
                                      form_text(request, "base_url", 2000), form_text(request, "user_agent", 1000))
    except (CookieFileError, ValueError) as error:
        return await credentials_list(request, str(error), 400)
    stored = await clients(request).auth.PutCredentials(put)
    return await credentials_list(request, stored=stored)


@state_changing
async def credentials_delete(request: Request) -> Response:
    await clients(request).auth.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(
        id=request.path_params["auth_id"]))
    return after_post("/credentials")
