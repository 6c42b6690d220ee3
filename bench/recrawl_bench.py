"""Recrawl benchmark: a 1,000-page signed-in site (ETags; its own process) crawled by the full system
(manager + executor processes) twice with nothing changed, on SQLite and on PostgreSQL, each pair on a fresh
database. The second run sends the first run's validators and is answered 304.

Reported per database (medians of --runs pairs): wall time of each run and their ratio; response body bytes
the site sent in each run and their ratio; bytes the run added to the database (the SQLite file, or
pg_database_size) and their ratio; and content bytes stored anew (titles and texts: what "no copies" means).
Targets (issue 19): second ÷ first ≤ 0.05 of response bytes, ≤ 0.01 of stored bytes, ≤ 0.5 of wall time."""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.runs import run_to_end

sys.path.insert(0, str(Path(__file__).parent))
from crawl_bench import fresh_postgres  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Crawl:
    seconds: float
    body_bytes: int
    stored_bytes: int  # database growth
    content_bytes: int  # titles and texts stored anew
    counts: tuple[int, int, int, int]


def start_site(pages: int, render_ms: float) -> tuple[subprocess.Popen[str], int, str]:
    code = f"""
import sys
from quaero.testing.wiki_site import WikiSite
site = WikiSite({pages}, "etag", render_seconds={render_ms / 1000}).start()
print(site.port, site.session, flush=True)
sys.stdin.read()
"""
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port, session = process.stdout.readline().split()
    return process, int(port), session


def site_bytes(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__stats", timeout=5) as answer:
        return int(json.load(answer)["body_bytes"])


TABLES = ("jobs", "job_logs", "documents", "contents", "run_sessions", "run_cookies", "schedule_ticks")


def database_bytes(url: str, work: str) -> int:
    """What the database holds: SQLite's pages in use (not its free pages, nor the WAL's copies), PostgreSQL's
    tables with their indexes and TOAST."""
    if url.startswith("sqlite"):
        import sqlite3
        with sqlite3.connect(Path(work) / "quaero.db") as conn:
            used = conn.execute("SELECT (SELECT page_count FROM pragma_page_count) - "
                                "(SELECT freelist_count FROM pragma_freelist_count)").fetchone()[0]
            return int(used) * int(conn.execute("PRAGMA page_size").fetchone()[0])
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return int(conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname = "
                                "ANY(%s)", (list(TABLES),)).fetchone()[0])  # type: ignore[index]


def content_bytes(url: str, work: str) -> int:
    query = "SELECT COALESCE(SUM(stored_bytes), 0) FROM contents"
    if url.startswith("sqlite"):
        import sqlite3
        with sqlite3.connect(Path(work) / "quaero.db") as conn:
            return int(conn.execute(query).fetchone()[0])
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return int(conn.execute(query).fetchone()[0])  # type: ignore[index]


def pair(port: int, session: str, pages: int, database_url: str) -> tuple[Crawl, Crawl]:
    with tempfile.TemporaryDirectory() as work:
        url = database_url or f"sqlite:///{work}/quaero.db"
        env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": url}
        manager = start_manager(env)
        executor = start_executor(env, manager.address, extra=["--workers", "16", "--log-level", "WARNING"])
        client = ManagerClient.connect(manager.address, TOKEN)
        channel = open_channel(executor.address, TOKEN)
        try:
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="wiki", site_domain="127.0.0.1", cookies=[
                auth_pb2.Cookie(name="wiki_session", value=session, domain="127.0.0.1", path="/")]))
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="wiki", auth_id="wiki", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{port}/w/0"], max_depth=30, max_pages=pages, concurrency=16,
                    allowed_networks=["127.0.0.1/32"]))))
            crawls = []
            for _ in range(2):
                time.sleep(1.5)  # (the manager's checkpoint copies SQLite's WAL into the file)
                stored, contents, sent = database_bytes(url, work), content_bytes(url, work), site_bytes(port)
                began = time.perf_counter()
                parent = run_to_end(channel, client, "wiki")
                seconds = time.perf_counter() - began
                assert parent.status == jobs_pb2.JOB_STATUS_COMPLETED, parent.error
                d = parent.documents
                crawls.append(Crawl(seconds, site_bytes(port) - sent, database_bytes(url, work) - stored,
                                    content_bytes(url, work) - contents, (d.new, d.changed, d.unchanged, d.gone)))
            return crawls[0], crawls[1]
        finally:
            channel.close()
            client.close()
            executor.stop()
            manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="pairs of runs per database (medians)")
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server; '' to skip it")
    parser.add_argument("--render-ms", type=float, default=0.0, help="how long the site takes to make a whole page "
                        "(a 304 takes none), as a wiki renders one")
    args = parser.parse_args()
    site, port, session = start_site(args.pages, args.render_ms)
    results: dict[str, list[tuple[Crawl, Crawl]]] = {"SQLite": [], "PostgreSQL": []}
    try:
        for _ in range(args.runs):
            results["SQLite"].append(pair(port, session, args.pages, ""))
            if args.postgres:
                url, drop = fresh_postgres(args.postgres)
                try:
                    results["PostgreSQL"].append(pair(port, session, args.pages, url))
                finally:
                    drop()
    finally:
        site.stdin.close()  # type: ignore[union-attr]
        site.wait(10)
    print(f"\nRecrawl: {args.pages} pages ({args.render_ms:g} ms to make a whole page), second run with nothing "
          f"changed (medians of {args.runs} pairs; {os.cpu_count()} cores)")
    print(f"{'database':<11} {'run 1 s':>8} {'run 2 s':>8} {'time':>6} {'body 1':>10} {'body 2':>8} {'bytes':>7} "
          f"{'stored 1':>10} {'stored 2':>10} {'stored':>7} {'content 2':>9}  counts of run 2")
    for name, pairs in results.items():
        if not pairs:
            continue

        def median(pick: Callable[[tuple[Crawl, Crawl]], float], of: list[tuple[Crawl, Crawl]] = pairs) -> float:
            return statistics.median(pick(p) for p in of)

        first_s, second_s = median(lambda p: p[0].seconds), median(lambda p: p[1].seconds)
        print(f"{name:<11} {first_s:8.2f} {second_s:8.2f} {median(lambda p: p[1].seconds / p[0].seconds):6.2f} "
              f"{median(lambda p: p[0].body_bytes):10,.0f} {median(lambda p: p[1].body_bytes):8,.0f} "
              f"{median(lambda p: p[1].body_bytes / max(p[0].body_bytes, 1)):7.3f} "
              f"{median(lambda p: p[0].stored_bytes):10,.0f} {median(lambda p: p[1].stored_bytes):10,.0f} "
              f"{median(lambda p: p[1].stored_bytes / max(p[0].stored_bytes, 1)):7.3f} "
              f"{median(lambda p: p[1].content_bytes):9,.0f}  {pairs[-1][1].counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
