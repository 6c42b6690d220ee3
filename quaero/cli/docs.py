"""`quaero docs ls|show|search|export`: crawled documents."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..api.manager.v1 import documents_pb2
from ..client import ManagerClient
from ..convert import DOCUMENT_KIND_NAMES as KIND_NAMES
from ..convert import DOCUMENT_KINDS as KINDS
from .common import describing, fail, id_column, manager, out, rpc, when

app = typer.Typer(help="Crawled documents.", no_args_is_help=True)


@app.command("ls")
def docs_ls(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="Only documents of this run (parent job id).")] = "",
    kind: Annotated[str, typer.Option(help="Only this kind (with --job): new, changed, unchanged or gone.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List crawled documents, newest first."""
    if kind and kind not in KINDS:
        fail(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    page = rpc(lambda: manager(ctx).documents.ListDocuments(documents_pb2.ListDocumentsRequest(
        parent_job_id=job, page_size=limit, omit_text=True, kinds=[KINDS[kind]] if kind else [])),
        "cannot list documents")
    table = Table(id_column(), "url", "title", "kind", "status", "fetched")
    for d in page.documents:
        table.add_row(d.id, escape(d.url), escape(d.title[:50]), KIND_NAMES.get(d.kind, "-"), str(d.status_code),
                      when(d.fetch_time))
    out.print(table)


@app.command("search")
def docs_search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help='Words (all must occur), "a phrase", -excluded, alpha OR beta.')],
    definition: Annotated[str, typer.Option(help="Only documents of this definition's runs.")] = "",
    job: Annotated[str, typer.Option(help="Only documents of this run.")] = "",
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every run's version of a URL, not only "
                                               "its latest.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many hits.")] = 20,
) -> None:
    """Search documents' titles and text, best match first."""
    response = rpc(lambda: manager(ctx).documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(
        query=query, definition_id=definition, parent_job_id=job, all_versions=all_versions, page_size=limit)),
        "cannot search")
    if not response.hits:
        out.print("no document matches", markup=False)
    for hit in response.hits:
        d = hit.document
        out.print(f"[bold]{escape(d.title) or '(no title)'}[/]  {escape(d.url)}  (run {d.parent_job_id}, "
                  f"fetched {when(d.fetch_time)})")
        out.print("  " + highlighted(hit.snippet, [(mark.start, mark.end) for mark in hit.highlights]))


def highlighted(snippet: str, marks: list[tuple[int, int]]) -> str:
    """The snippet as rich markup, its marked words bold (everything from the site escaped)."""
    parts, last = [], 0
    for start, end in sorted(marks):
        parts += [escape(snippet[last:start]), f"[bold]{escape(snippet[start:end])}[/]"]
        last = end
    return "".join(parts) + escape(snippet[last:])


@app.command("export")
def docs_export(
    ctx: typer.Context,
    run: Annotated[str, typer.Option("--run", help="The run (parent job id) whose documents to write.")],
    changed: Annotated[bool, typer.Option("--changed", help="Only what changed since the run before: new and "
                                          "changed documents, then the gone ones (without text).")] = False,
) -> None:
    """Write a run's documents to stdout as JSON Lines, one document per line, streamed page by page."""
    client = manager(ctx)
    with describing(f"cannot export run {run}"):
        if changed:
            lines = documents_of(client, run, [KINDS["new"], KINDS["changed"]], omit_text=False)
            gone = documents_of(client, run, [KINDS["gone"]], omit_text=True)
            write_lines(line for source in (lines, gone) for line in source)
        else:
            write_lines(documents_of(client, run, [], omit_text=False))


def documents_of(client: ManagerClient, run: str, kinds: list[documents_pb2.DocumentKind.ValueType],
                 omit_text: bool) -> Iterator[dict[str, object]]:
    token = ""
    while True:
        page = client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=run, kinds=kinds, page_size=200, page_token=token, omit_text=omit_text))
        for d in page.documents:
            line: dict[str, object] = {
                "id": d.id, "url": d.url, "final_url": d.final_url, "kind": KIND_NAMES.get(d.kind, ""),
                "title": d.title, "status_code": d.status_code, "content_type": d.content_type,
                "content_hash": d.content_hash, "fetched_at": d.fetch_time.ToDatetime().isoformat() + "Z",
                "run": d.parent_job_id}
            if not omit_text:
                line["text"] = d.text
                line["text_truncated"] = d.text_truncated
            yield line
        token = page.next_page_token
        if not token:
            return


def write_lines(lines: Iterator[dict[str, object]]) -> None:
    for line in lines:
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@app.command("show")
def docs_show(ctx: typer.Context, key: Annotated[str, typer.Argument(help="A document id or URL.")]) -> None:
    """Show one document with its text."""
    request = documents_pb2.GetDocumentRequest(url=key) if "://" in key \
        else documents_pb2.GetDocumentRequest(document_id=key)
    d = rpc(lambda: manager(ctx).documents.GetDocument(request), f"cannot show {key}")
    out.print(f"{d.title}\n{d.url} -> {d.final_url} ({d.status_code}, {d.content_type}, "
              f"{KIND_NAMES.get(d.kind, '-')})"
              f"{' [text cut at 1 MiB]' if d.text_truncated else ''}\nfetched {when(d.fetch_time)} by job {d.job_id}\n",
              markup=False)
    out.print(d.text, markup=False)
