"""Search benchmark: 100,000 documents (titles of a few words, texts of 150-400 words drawn from a 30,000-word
vocabulary with a Zipf distribution, as natural text is) stored as a crawl stores them (contents, search
index, documents; in batches of 1,000), then SearchDocuments through a manager process, on SQLite and on
PostgreSQL. Query classes: two mid-frequency words, one very common word (matches about a third of the
corpus: the ranking's worst case), a phrase taken from a document, an OR, an exclusion. Reports latency
p50 / p95 per class and over all queries (the target: p95 ≤ 50 ms at 100,000 documents)."""
from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path

from manager_service.storage import Stores
from manager_service.storage.db import connect, migrate
from manager_service.storage.documents import url_hash
from manager_service.storage.records import DocumentInput
from manager_service.storage.secretbox import SecretBox
from quaero.api.manager.v1 import documents_pb2
from quaero.client import ManagerClient
from quaero.testing.processes import start_manager

sys.path.insert(0, str(Path(__file__).parent))
from crawl_bench import fresh_postgres  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
VOCABULARY = 30_000


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(VOCABULARY + 2000)})[:VOCABULARY]
    rng.shuffle(words)
    weights = list(accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    return words, weights


def build(database_url: str, documents: int, rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """Stores the corpus; returns the vocabulary (by frequency) and a few texts' words (for phrases)."""
    words, weights = vocabulary(rng)
    db = connect(database_url)
    migrate(db)
    stores = Stores.open(db, SecretBox(b"k" * 32))
    samples: list[list[str]] = []
    stamp = datetime.now(UTC)
    store = stores.documents
    for start in range(0, documents, 1000):
        with db.write_engine.begin() as conn:
            for n in range(start, min(start + 1000, documents)):
                text = rng.choices(words, cum_weights=weights, k=rng.randint(150, 400))
                if len(samples) < 200 and n % 97 == 0:
                    samples.append(text)
                url = f"https://intranet.test/doc/{n}"
                document = DocumentInput(url=url, final_url=url, title=" ".join(rng.choices(words, cum_weights=weights,
                                                                                             k=rng.randint(3, 6))),
                                         text=" ".join(text), content_hash=url_hash(f"{n}"), content_type="text/html",
                                         status_code=200)
                basis = store.basis(conn, document, "bench-run", "search-bench")
                store.write(conn, document, basis, f"job-{n}", "bench-run", "search-bench", stamp)
    if db.dialect == "postgresql":
        with db.read_engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE contents")
            conn.exec_driver_sql("VACUUM ANALYZE documents")
    db.dispose()
    return words, samples


def queries(words: list[str], samples: list[list[str]], rng: random.Random, count: int) -> list[tuple[str, str]]:
    out = []
    for n in range(count):
        kind = ("two words", "common word", "phrase", "or", "exclusion")[n % 5]
        if kind == "two words":
            query = f"{rng.choice(words[500:5000])} {rng.choice(words[500:5000])}"
        elif kind == "common word":
            query = rng.choice(words[:20])
        elif kind == "phrase":
            text = rng.choice(samples)
            at = rng.randrange(len(text) - 2)
            query = f'"{text[at]} {text[at + 1]}"'
        elif kind == "or":
            query = f"{rng.choice(words[200:2000])} OR {rng.choice(words[200:2000])}"
        else:
            query = f"{rng.choice(words[100:1000])} -{rng.choice(words[:50])}"
        out.append((kind, query))
    return out


def measure(database_url: str, work: str, asked: list[tuple[str, str]]) -> dict[str, list[float]]:
    env = {"QUAERO_DATA_DIR": work, "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": database_url}
    manager = start_manager(env)
    client = ManagerClient.connect(manager.address, TOKEN)
    timings: dict[str, list[float]] = {}
    try:
        for _kind, query in asked[:20]:  # warm-up (page cache, plans)
            client.documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(query=query,
                                                                                  definition_id="search-bench"))
        for kind, query in asked:
            began = time.perf_counter()
            client.documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(
                query=query, definition_id="search-bench", page_size=20))
            timings.setdefault(kind, []).append((time.perf_counter() - began) * 1000)
    finally:
        client.close()
        manager.stop()
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--postgres", default=PG_ADMIN, help="admin URL of a PostgreSQL server; '' to skip it")
    args = parser.parse_args()
    results = {}
    for name in ("SQLite", "PostgreSQL"):
        if name == "PostgreSQL" and not args.postgres:
            continue
        rng = random.Random(7)
        with tempfile.TemporaryDirectory() as work:
            url, drop = (f"sqlite:///{work}/quaero.db", lambda: None) if name == "SQLite" else fresh_postgres(
                args.postgres)
            try:
                began = time.perf_counter()
                words, samples = build(url, args.documents, rng)
                built = time.perf_counter() - began
                results[name] = (built, measure(url, work, queries(words, samples, rng, args.queries)))
            finally:
                drop()
    print(f"\nSearch: {args.documents:,} documents, {args.queries} queries through SearchDocuments (ms)")
    for name, (built, timings) in results.items():
        every = [t for values in timings.values() for t in values]
        print(f"{name}: stored in {built:.0f} s ({args.documents / built:,.0f} documents/s); all queries p50 "
              f"{statistics.median(every):.1f}, p95 {percentile(every, 0.95):.1f}")
        for kind, values in timings.items():
            print(f"  {kind:<12} p50 {statistics.median(values):6.1f}  p95 {percentile(values, 0.95):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
