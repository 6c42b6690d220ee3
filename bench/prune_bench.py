"""Prune benchmark: GetJob latency while a run of 100,000 rows is deleted (DeleteJob: 34,000 pages, their
documents and contents with search entries), against the same GetJob idle, on SQLite and PostgreSQL. The
run is written straight through the stores (as a crawl's records would write it); GetJob and DeleteJob go
through a manager process. Target (issue 19): p99 during the delete ≤ 2× p99 idle."""
from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from manager_service.storage import Stores
from manager_service.storage.db import connect, migrate
from manager_service.storage.records import ChildSpec, DocumentInput
from manager_service.storage.secretbox import SecretBox
from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.job_status import JobStatus
from quaero.testing.processes import start_manager

sys.path.insert(0, str(Path(__file__).parent))
from crawl_bench import fresh_postgres  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def build(database_url: str, pages: int) -> tuple[str, str]:
    """A finished run of `pages` pages, each with a document and a content of ~2 KB; and another run (the
    one GetJob reads)."""
    db = connect(database_url)
    migrate(db)
    stores = Stores.open(db, SecretBox(b"k" * 32))
    run = stores.jobs.create(parent_id="", type="crawl", name="big", config={"job_definition_id": "prune"},
                             metadata={}, request_id="")
    other = stores.jobs.create(parent_id="", type="crawl", name="read", config={}, metadata={"auth_id": "x"},
                               request_id="")
    stamp = datetime.now(UTC)
    text = "lorem ipsum dolor sit amet " * 80
    for start in range(0, pages, 1000):
        with db.write_engine.begin() as conn:
            parent = stores.jobs.rows.lock_parent(conn, run.id)
            created = stores.jobs.rows.insert_children(conn, parent, [
                ChildSpec("crawl_page", f"p{n}", {"url": f"https://x.test/{n}"}, f"https://x.test/{n}", 1)
                for n in range(start, min(start + 1000, pages))], 0)
            for n, child in zip(range(start, start + 1000), created.jobs, strict=False):
                url = f"https://x.test/{n}"
                document = DocumentInput(url=url, final_url=url, title=f"page {n}", text=f"{n} {text}",
                                         content_hash=f"{n:064d}", content_type="text/html", status_code=200)
                basis = stores.documents.basis(conn, document, run.id, "prune")
                stores.documents.write(conn, document, basis, child.id, run.id, "prune", stamp)
    with db.write_engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET status = :s WHERE id = :r OR parent_id = :r"),
                     {"s": JobStatus.COMPLETED.value, "r": run.id})
    if db.dialect == "postgresql":
        with db.read_engine.connect() as conn:
            for table in ("jobs", "documents", "contents"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    db.dispose()
    return run.id, other.id


def latencies(client: ManagerClient, job_id: str, until: threading.Event, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds
    while not until.is_set() and time.monotonic() < deadline:
        began = time.perf_counter()
        client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))
        out.append((time.perf_counter() - began) * 1000)
        time.sleep(0.002)
    return out


def measure(database_url: str, work: str, run_id: str, other_id: str) -> tuple[list[float], list[float], float]:
    env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": database_url}
    manager = start_manager(env)
    client = ManagerClient.connect(manager.address, TOKEN, default_timeout=600)
    try:
        latencies(client, other_id, threading.Event(), 1.0)  # warm-up
        idle = latencies(client, other_id, threading.Event(), 5.0)
        done = threading.Event()
        took: list[float] = []

        def delete() -> None:
            began = time.perf_counter()
            client.jobs.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=run_id))
            took.append(time.perf_counter() - began)
            done.set()

        deleter = threading.Thread(target=delete)
        deleter.start()
        during = latencies(client, other_id, done, 600.0)
        deleter.join()
        return idle, during, took[0]
    finally:
        client.close()
        manager.stop()


def p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=34_000, help="pages of the deleted run (3 rows each)")
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server; '' to skip it")
    args = parser.parse_args()
    print(f"\nPrune: GetJob while DeleteJob removes a run of {args.pages:,} pages ({3 * args.pages:,} rows) (ms)")
    for name in ("SQLite", "PostgreSQL"):
        if name == "PostgreSQL" and not args.postgres:
            continue
        with tempfile.TemporaryDirectory() as work:
            url, drop = (f"sqlite:///{work}/quaero.db", lambda: None) if name == "SQLite" else fresh_postgres(
                args.postgres)
            try:
                run_id, other_id = build(url, args.pages)
                idle, during, seconds = measure(url, work, run_id, other_id)
            finally:
                drop()
        print(f"{name}: delete took {seconds:.1f} s ({3 * args.pages / seconds:,.0f} rows/s); GetJob idle p50 "
              f"{statistics.median(idle):.2f} p99 {p(idle, 0.99):.2f}; during p50 {statistics.median(during):.2f} "
              f"p99 {p(during, 0.99):.2f}; p99 ratio {p(during, 0.99) / p(idle, 0.99):.2f} ({len(during)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
