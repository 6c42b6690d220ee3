"""Leases on both databases, with time moved by the test: expiry returns a page to pending, attempts run
out, a retry waits for its time, and a lost lease writes nothing."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from manager_service.storage import Stores
from manager_service.storage.clock import ManualClock
from manager_service.storage.leases import MAX_LEASE_ATTEMPTS
from manager_service.storage.records import ChildSpec, DocumentInput, Job
from quaero.errors import InvalidArgument, LeaseLost
from quaero.job_status import JobStatus

SECOND = timedelta(seconds=1)


@pytest.fixture
def kind() -> str:
    """A job type of this test's own: the PostgreSQL database is shared by the session's tests."""
    return f"page-{uuid.uuid4().hex[:8]}"


def run_with_children(stores: Stores, kind: str, count: int = 1, **config: object) -> tuple[Job, list[Job]]:
    parent = stores.jobs.create(parent_id="", type="crawl", name="run", config=dict(config), metadata={},
                                request_id="")
    stores.jobs.update_status(parent.id, JobStatus.RUNNING)
    created = stores.jobs.create_children(parent.id, [ChildSpec(kind, f"p{n}", {"n": n}, f"p{n}", 0)
                                                      for n in range(count)], 0)
    return parent, created.jobs


def test_an_expired_lease_returns_the_page_and_the_last_attempt_fails_it(stores: Stores, clock: ManualClock, kind: str) -> None:
    parent, [child] = run_with_children(stores, kind)
    tokens = []
    for attempt in range(1, MAX_LEASE_ATTEMPTS + 1):
        leased, token = stores.leases.lease("w", 5, SECOND, kind)
        assert [job.id for job in leased] == [child.id] and leased[0].attempts == attempt
        tokens.append(token)
        # (expire() counts every expired lease in the database, other tests' included: look at this page)
        stores.leases.expire()
        assert stores.jobs.get(child.id).status == JobStatus.RUNNING, "expired too early"
        clock.advance(1.1)
        assert stores.leases.expire() >= 1
        assert stores.jobs.get(child.id).status != JobStatus.RUNNING  # pending again, or failed at the last
    state = stores.jobs.get(child.id)
    assert state.status == JobStatus.FAILED and state.error_reason == "LEASE_ATTEMPTS_EXHAUSTED"
    assert len(set(tokens)) == MAX_LEASE_ATTEMPTS
    with pytest.raises(LeaseLost):
        stores.leases.complete(child.id, tokens[0], JobStatus.COMPLETED, result={}, error="", error_reason="",
                               document=None, children=[], max_children=0)
    settled = stores.jobs.get(parent.id)
    assert settled.status == JobStatus.FAILED and settled.children_failed == 1


def test_renewing_keeps_a_lease_and_a_stale_token_cannot_renew(stores: Stores, clock: ManualClock, kind: str) -> None:
    _parent, [child] = run_with_children(stores, kind)
    [_leased], token = stores.leases.lease("w", 1, 2 * SECOND, kind)
    clock.advance(1.5)
    stores.leases.renew(child.id, token, 2 * SECOND)
    clock.advance(1.5)
    stores.leases.expire()
    assert stores.jobs.get(child.id).lease_token == token, "a renewed lease expired"
    with pytest.raises(LeaseLost):
        stores.leases.renew(child.id, "not-the-token", SECOND)


def test_a_page_given_back_waits_for_its_time(stores: Stores, clock: ManualClock, kind: str) -> None:
    _parent, [child] = run_with_children(stores, kind)
    [_leased], token = stores.leases.lease("w", 1, 30 * SECOND, kind)
    waiting = stores.leases.complete(child.id, token, JobStatus.PENDING, result={}, error="robots.txt answered 503",
                                     error_reason="ROBOTS_UNAVAILABLE", document=None, children=[], max_children=0,
                                     retry_after=10 * SECOND)
    assert waiting.status == JobStatus.PENDING and waiting.error_reason == "ROBOTS_UNAVAILABLE"
    assert waiting.not_before is not None
    assert stores.leases.lease("w", 1, SECOND, kind)[0] == []
    clock.advance(10.5)
    [again], token = stores.leases.lease("w", 1, SECOND, kind)
    assert again.id == child.id and again.attempts == 2 and again.not_before is None
    done = stores.leases.complete(child.id, token, JobStatus.COMPLETED, result={"ok": True}, error="", error_reason="",
                                  document=None, children=[], max_children=0)
    assert done.status == JobStatus.COMPLETED and done.error_reason == "" and done.error == ""
    with pytest.raises(InvalidArgument):
        stores.leases.complete(child.id, token, JobStatus.PENDING, result={}, error="", error_reason="",
                               document=None, children=[], max_children=0, retry_after=timedelta(hours=2))


def test_completing_stores_the_page_creates_its_children_and_settles_the_run(stores: Stores, kind: str) -> None:
    parent, [child] = run_with_children(stores, kind, max_child_failures=0)
    [_leased], token = stores.leases.lease("w", 1, 30 * SECOND, kind)
    document = DocumentInput(url="https://a.test/" + "x" * 5000, final_url="https://a.test/", title="T\x00",
                             text="t\x00ext", content_hash="h", content_type="text/html", status_code=200)
    kids = [ChildSpec(kind, "k", {}, "https://a.test/" + "y" * 3000, 1), ChildSpec(kind, "k", {}, "dup", 1),
            ChildSpec(kind, "k", {}, "dup", 1)]
    stores.leases.complete(child.id, token, JobStatus.COMPLETED, result={}, error="", error_reason="",
                           document=document, children=kids, max_children=10)
    run = stores.jobs.get(parent.id)
    assert (run.progress_current, run.progress_total, run.status) == (1, 3, JobStatus.RUNNING)
    stored = stores.documents.get("", document.url)
    assert stored.title == "T" and stored.text == "text" and stored.parent_job_id == parent.id
    leased, token = stores.leases.lease("w", 5, 30 * SECOND, kind)
    for job in leased:
        stores.leases.complete(job.id, token, JobStatus.COMPLETED, result={}, error="", error_reason="",
                               document=None, children=[], max_children=10)
    assert stores.jobs.get(parent.id).status == JobStatus.COMPLETED


def test_children_are_deduplicated_against_the_run_and_cut_at_max_children(stores: Stores, kind: str) -> None:
    """Both ways of inserting children: all new keys fit (one INSERT ... ON CONFLICT DO NOTHING), and
    some may not (the known keys are read first, so that a duplicate never takes a free place)."""
    parent, _ = run_with_children(stores, kind, count=2)  # keys p0, p1
    spec = lambda key: ChildSpec(kind, key, {}, key, 1)  # noqa: E731
    fits = stores.jobs.create_children(parent.id, [spec("p0"), spec("a"), spec("b"), spec("a")], 10)
    assert [job.dedup_key for job in fits.jobs] == ["a", "b"] and (fits.duplicates, fits.over_limit) == (2, 0)
    assert [job.created_at for job in fits.jobs] == sorted(job.created_at for job in fits.jobs)
    # 4 exist, room for 2 more: p1 and b are known, so c and d take the places and e is over the limit.
    tight = stores.jobs.create_children(parent.id, [spec("p1"), spec("c"), spec("b"), spec("d"), spec("e")], 6)
    assert [job.dedup_key for job in tight.jobs] == ["c", "d"] and (tight.duplicates, tight.over_limit) == (2, 1)
    assert stores.jobs.get(parent.id).progress_total == 6
    again = stores.jobs.create_children(parent.id, [spec("c"), spec("f")], 0)  # no limit: one statement
    assert [job.dedup_key for job in again.jobs] == ["f"] and again.duplicates == 1
    assert stores.jobs.get(parent.id).progress_total == 7


def test_a_batch_of_completions_shares_the_parents_places_and_settles_it_once(stores: Stores, kind: str) -> None:
    """Three pages of one run in one call: the children they discover share max_children (the second
    page sees the places the first took), the counters move once, and the run ends when that was all."""
    from manager_service.storage.records import Completion

    parent, _ = run_with_children(stores, kind, count=3, max_child_failures=0)
    leased, token = stores.leases.lease("w", 3, 30 * SECOND, kind)
    found = lambda *keys: [ChildSpec(kind, k, {}, k, 1) for k in keys]  # noqa: E731
    outcomes, _ = stores.leases.complete_many([
        Completion(leased[0].id, token, JobStatus.COMPLETED, children=found("x", "y"), max_children=6),
        Completion(leased[1].id, token, JobStatus.COMPLETED, children=found("y", "z", "w"), max_children=6),
        Completion(leased[2].id, "stale", JobStatus.COMPLETED)])
    assert [type(o).__name__ for o in outcomes] == ["Job", "Job", "LeaseLost"]
    run = stores.jobs.get(parent.id)
    assert (run.progress_current, run.progress_total, run.status) == (2, 6, JobStatus.RUNNING)
    more, token = stores.leases.lease("w", 5, 30 * SECOND, kind)
    assert sorted(job.name for job in more) == ["x", "y", "z"]  # w found no place; the third page is still held
    outcomes, _ = stores.leases.complete_many(
        [Completion(leased[2].id, _token_of(stores, leased[2].id), JobStatus.COMPLETED)]
        + [Completion(job.id, token, JobStatus.FAILED if job.name == "z" else JobStatus.COMPLETED, error="x")
           for job in more])
    assert all(isinstance(o, Job) for o in outcomes)
    run = stores.jobs.get(parent.id)
    assert (run.progress_current, run.children_failed, run.status) == (6, 1, JobStatus.FAILED)
    assert run.error_reason == "TOO_MANY_CHILD_FAILURES"


def _token_of(stores: Stores, job_id: str) -> str:
    token = stores.jobs.get(job_id).lease_token
    assert token
    return token
