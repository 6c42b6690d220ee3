"""`quaero auth import|ls|rm`: stored site credentials (browser cookies)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..api.manager.v1 import auth_pb2
from ..convert import put_credentials_request
from ..cookies.files import CookieFileError, read_cookie_file
from .common import fail, manager, out, rpc, when

app = typer.Typer(help="Stored site credentials (browser cookies).", no_args_is_help=True)


@app.command("import")
def auth_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Chrome/extension cookie JSON, Netscape cookies.txt or a "
                                              "Playwright storageState JSON file.")],
    site: Annotated[str, typer.Option(help="The site the cookies are for, e.g. example.com.")],
    id: Annotated[str, typer.Option("--id", help="Id to store them under (default: the site); replaces "
                                               "existing credentials with that id.")] = "",
    base_url: Annotated[str, typer.Option(help="The site's base URL (default https://SITE/).")] = "",
    user_agent: Annotated[str, typer.Option(help="User-Agent of the browser the cookies came from.")] = "",
) -> None:
    """Store a logged-in browser session's cookies for a site; prints the cookies refused and why."""
    try:
        kind, cookies = read_cookie_file(file)
    except CookieFileError as error:
        fail(str(error))
    if not cookies:
        fail(f"{file}: holds no cookies")
    request = put_credentials_request(site, cookies, id, base_url, user_agent)
    # The manager applies the rules (site, public suffixes, prefixes, characters, size) for every client.
    info = rpc(lambda: manager(ctx).auth.PutCredentials(request), f"cannot store the cookies of {file}")
    out.print(f"stored {len(info.cookies)} cookies for {info.site_domain} as auth_id [bold]{info.id}[/] "
              f"(read {len(cookies)} from {kind})")
    for rejected in info.rejected_cookies:
        out.print(f"  refused {rejected.name!r}: {rejected.reason}", markup=False)


@app.command("ls")
def auth_ls(ctx: typer.Context) -> None:
    """List stored credentials (never their values)."""
    page = rpc(lambda: manager(ctx).auth.ListCredentials(auth_pb2.ListCredentialsRequest(page_size=1000)),
               "cannot list credentials")
    table = Table("auth_id", "site", "cookies", "expires first", "imported", "refreshed by a crawl")
    for info in page.credentials:
        first = when(info.earliest_expire_time) if info.HasField("earliest_expire_time") else "session"
        refreshed = (f"{when(info.refresh_time)} (run {info.refreshed_by_job_id[:8]})" if info.refreshed_by_job_id
                     else "-")
        table.add_row(info.id, info.site_domain, str(len(info.cookies)), first, when(info.update_time), refreshed)
    out.print(table)


@app.command("rm")
def auth_rm(ctx: typer.Context, auth_id: Annotated[str, typer.Argument(help="The credentials' id.")]) -> None:
    """Delete stored credentials."""
    rpc(lambda: manager(ctx).auth.DeleteCredentials(auth_pb2.DeleteCredentialsRequest(id=auth_id)),
        f"cannot delete {auth_id}")
    out.print(f"deleted {auth_id}")
