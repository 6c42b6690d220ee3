"""`quaero docs ls|show`: crawled documents."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..api.manager.v1 import documents_pb2
from .common import id_column, manager, out, rpc, when

app = typer.Typer(help="Crawled documents.", no_args_is_help=True)


@app.command("ls")
def docs_ls(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="Only documents of this run (parent job id).")] = "",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List crawled documents, newest first."""
    page = rpc(lambda: manager(ctx).documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=job, page_size=limit, omit_text=True)), "cannot list documents")
    table = Table(id_column(), "url", "title", "status", "fetched")
    for d in page.documents:
        table.add_row(d.id, d.url, d.title[:50], str(d.status_code), when(d.fetch_time))
    out.print(table)


@app.command("show")
def docs_show(ctx: typer.Context, key: Annotated[str, typer.Argument(help="A document id or URL.")]) -> None:
    """Show one document with its text."""
    request = documents_pb2.GetDocumentRequest(url=key) if "://" in key \
        else documents_pb2.GetDocumentRequest(document_id=key)
    d = rpc(lambda: manager(ctx).documents.GetDocument(request), f"cannot show {key}")
    out.print(f"[bold]{d.title}[/]\n{d.url} -> {d.final_url} ({d.status_code}, {d.content_type})"
              f"{' [text cut at 1 MiB]' if d.text_truncated else ''}\nfetched {when(d.fetch_time)} by job {d.job_id}\n",
              markup=False)
    out.print(d.text, markup=False)
