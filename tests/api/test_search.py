"""SearchDocuments: ranked hits with snippets and highlights, one query syntax (words, "phrases", -exclusion,
OR) that behaves the same on SQLite (FTS5) and PostgreSQL (tsvector + GIN): a fixed corpus, stored through
the lease API as a crawl stores it, gives identical answers on both."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from quaero.api.manager.v1 import documents_pb2, jobs_pb2
from quaero.convert import dict_to_struct
from quaero.testing.harness import RunningManager, start_manager

CORPUS = {
    "alpha": ("Alpha guide", "The alpha release notes describe installing quaero on a server. Release early."),
    "beta": ("Beta handbook", "Beta testers report bugs in the crawler and the scheduler."),
    "process": ("Release process", "Every release is tagged, and notes are published for alpha and beta builds."),
    "setup": ("Server setup", "Install the server, then configure the crawler to reach the intranet wiki."),
    "wiki": ("Intranet wiki", "The intranet wiki holds release notes for every team, in Français and English."),
    "bread": ("Cooking", "A recipe for bread with flour, water, salt and yeast; e-mail it to a friend."),
}
QUERIES = ["release", "release notes", '"release notes"', "release -beta", "bread OR yeast", "alpha OR beta",
           "crawler wiki", "RELEASE", "français", "email", '"e mail"', "e-mail", "missing", "notes -wiki -describe"]
EXPECTED_SETS = {
    "release": {"alpha", "process", "wiki"}, "release notes": {"alpha", "process", "wiki"},
    '"release notes"': {"alpha", "wiki"}, "release -beta": {"alpha", "wiki"}, "bread OR yeast": {"bread"},
    "alpha OR beta": {"alpha", "beta", "process"}, "crawler wiki": {"setup"}, "RELEASE": {"alpha", "process", "wiki"},
    "français": {"wiki"}, "email": set(), '"e mail"': {"bread"}, "e-mail": {"bread"}, "missing": set(),
    "notes -wiki -describe": {"process"},
}


def store_run(manager: RunningManager, definition_id: str, corpus: dict[str, tuple[str, str]]) -> str:
    """A run whose pages hold `corpus` (name -> (title, text)), recorded as an executor records pages."""
    jobs = manager.client.jobs
    request = jobs_pb2.CreateJobRequest(type="crawl", name="corpus")
    dict_to_struct({"job_definition_id": definition_id}, request.config)
    parent = jobs.CreateJob(request)
    jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=parent.id, status=jobs_pb2.JOB_STATUS_RUNNING))
    specs = []
    for name in corpus:
        spec = jobs_pb2.ChildJobSpec(type="corpus_page", name=name, dedup_key=name)
        dict_to_struct({"url": f"https://docs.test/{name}"}, spec.config)
        specs.append(spec)
    jobs.BatchCreateChildJobs(jobs_pb2.BatchCreateChildJobsRequest(parent_id=parent.id, children=specs))
    executor = manager.connect_as_executor()
    try:
        leased = executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="corpus", max_jobs=100,
                                                                   type="corpus_page")).leased_jobs
        completions = []
        for item in leased:
            url = item.job.config["url"]
            title, text = corpus[url.rsplit("/", 1)[1]]
            completions.append(jobs_pb2.CompleteLeasedJobRequest(
                job_id=item.job.id, lease_token=item.lease.lease_token, status=jobs_pb2.JOB_STATUS_COMPLETED,
                document=documents_pb2.Document(url=url, final_url=url, title=title, text=text, status_code=200,
                                                 content_hash=f"{hash((title, text)):x}", content_type="text/html")))
        executor.jobs.CompleteLeasedJobs(jobs_pb2.CompleteLeasedJobsRequest(completions=completions))
    finally:
        executor.close()
    return parent.id


def answers(manager: RunningManager, definition_id: str) -> dict[str, list[tuple[str, str, list[tuple[int, int]]]]]:
    found = {}
    for query in QUERIES:
        hits = manager.client.documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(
            query=query, definition_id=definition_id)).hits
        found[query] = [(hit.document.url.rsplit("/", 1)[1], hit.snippet,
                         [(mark.start, mark.end) for mark in hit.highlights]) for hit in hits]
    return found


@pytest.fixture
def both(sqlite_manager: RunningManager, postgres_url: str, tmp_path: Path) -> Iterator[list[RunningManager]]:
    postgres = start_manager(tmp_path / "pg", postgres_url)
    yield [sqlite_manager, postgres]
    postgres.close()


def test_a_fixed_corpus_answers_the_same_on_both_databases(both: list[RunningManager]) -> None:
    results = []
    for manager in both:
        store_run(manager, "corpus-def", CORPUS)
        results.append(answers(manager, "corpus-def"))
    sqlite, postgres = results
    assert sqlite == postgres
    for query, expected in EXPECTED_SETS.items():
        assert {name for name, _snippet, _marks in sqlite[query]} == expected, query
    # A title match ranks first; the snippet shows the words, and the highlights point at them.
    assert sqlite["release"][0][0] == "process"
    name, snippet, marks = sqlite["crawler wiki"][0]
    assert [snippet[start:end].lower() for start, end in marks] == ["crawler", "wiki"]
    assert "configure the crawler to reach the intranet wiki" in snippet


def test_latest_only_paging_and_scopes(sqlite_manager: RunningManager) -> None:
    first = store_run(sqlite_manager, "versions", {"a": ("A", "first version of zebra"), "b": ("B", "zebra too")})
    second = store_run(sqlite_manager, "versions", {"a": ("A", "second version of zebra")})
    search = sqlite_manager.client.documents.SearchDocuments

    def runs(**request: Any) -> list[tuple[str, str]]:
        hits = search(documents_pb2.SearchDocumentsRequest(definition_id="versions", **request)).hits
        return sorted((hit.document.url.rsplit("/", 1)[1], hit.document.parent_job_id) for hit in hits)

    # Latest versions only by default: a's from the second run, b's (in no later run) from the first.
    assert runs(query="zebra") == sorted([("a", second), ("b", first)])
    assert runs(query="zebra", all_versions=True) == sorted([("a", second), ("a", first), ("b", first)])
    assert runs(query="first") == []  # (a's first version is no longer its latest)
    hits = search(documents_pb2.SearchDocumentsRequest(query="zebra", parent_job_id=first, all_versions=True)).hits
    assert {hit.document.parent_job_id for hit in hits} == {first}
    # Paging: one hit a page, every hit once.
    seen, token = [], ""
    while True:
        page = search(documents_pb2.SearchDocumentsRequest(query="zebra", definition_id="versions",
                                                           all_versions=True, page_size=1, page_token=token))
        seen += [hit.document.id for hit in page.hits]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 3 and len(set(seen)) == 3


@pytest.mark.parametrize("query, words", [("", "no word"), ("-alpha", "no word"), ("OR alpha", "OR must"),
                                          ("alpha OR", "OR must"), ("alpha OR -beta", "excluded"),
                                          ("x" * 501, "500")])
def test_a_query_that_cannot_mean_anything_is_refused_with_a_reason(sqlite_manager: RunningManager, query: str,
                                                                    words: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        sqlite_manager.client.documents.SearchDocuments(documents_pb2.SearchDocumentsRequest(query=query))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details()
