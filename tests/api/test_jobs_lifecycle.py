"""Job creation, status transitions, logs, stats, paging and WatchJob through gRPC."""
from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from quaero.api.manager.v1 import documents_pb2, jobs_pb2, jobs_pb2_grpc
from quaero.convert import dict_to_struct
from tests.support.grpc_errors import expect_error

S = jobs_pb2


def create(manager: Any, **kwargs: Any) -> jobs_pb2.Job:
    return manager.client.jobs.CreateJob(S.CreateJobRequest(type=kwargs.pop("type", "test"), **kwargs))


def set_status(manager: Any, job_id: str, status: int, **kwargs: Any) -> jobs_pb2.Job:
    return manager.client.jobs.UpdateJobStatus(S.UpdateJobStatusRequest(job_id=job_id, status=status, **kwargs))


def test_a_retried_create_with_its_request_id_returns_the_first_job(manager: Any) -> None:
    first = create(manager, name="once", request_id="req-123")
    again = create(manager, name="once", request_id="req-123")
    assert again.id == first.id
    listed = manager.client.jobs.ListJobs(S.ListJobsRequest(page_size=1000)).jobs
    assert sum(1 for job in listed if job.name == "once") == 1


def test_a_request_id_reused_with_another_request_is_refused(manager: Any) -> None:
    create(manager, name="once", request_id="req-456")
    expect_error(lambda: create(manager, name="twice", request_id="req-456"), grpc.StatusCode.ALREADY_EXISTS,
                 "REQUEST_ID_REUSED", "request_id")
    for bad in ("has space", "x" * 129, "tab\t", "é"):
        expect_error(lambda bad=bad: create(manager, request_id=bad), grpc.StatusCode.INVALID_ARGUMENT,
                     "INVALID_REQUEST_ID", "request_id")


def test_request_ids_are_scoped_by_the_callers_role(manager: Any) -> None:
    mine = create(manager, name="same", request_id="shared-id")
    with manager.connect_as_executor() as executor:
        theirs = executor.jobs.CreateJob(S.CreateJobRequest(type="test", name="same", request_id="shared-id"))
        assert theirs.id != mine.id
        assert executor.jobs.CreateJob(S.CreateJobRequest(type="test", name="same", request_id="shared-id")).id \
            == theirs.id
    assert create(manager, name="same", request_id="shared-id").id == mine.id


def test_status_moves_forward_and_sets_times(manager: Any) -> None:
    job = create(manager)
    assert job.status == S.JOB_STATUS_PENDING and not job.HasField("start_time")
    running = set_status(manager, job.id, S.JOB_STATUS_RUNNING)
    assert running.HasField("start_time") and not running.HasField("finish_time")
    done = set_status(manager, job.id, S.JOB_STATUS_COMPLETED)
    assert done.status == S.JOB_STATUS_COMPLETED and done.HasField("finish_time")


@pytest.mark.parametrize("terminal", [S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED, S.JOB_STATUS_CANCELLED])
def test_nothing_leaves_a_terminal_state(manager: Any, terminal: int) -> None:
    job = create(manager)
    set_status(manager, job.id, S.JOB_STATUS_RUNNING)
    final = set_status(manager, job.id, terminal, error="the end")
    others = [t for t in (S.JOB_STATUS_PENDING, S.JOB_STATUS_RUNNING, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED,
                          S.JOB_STATUS_CANCELLED) if t != terminal]
    for target in others:
        error = expect_error(lambda t=target: set_status(manager, job.id, t), grpc.StatusCode.FAILED_PRECONDITION,
                             "ILLEGAL_TRANSITION")
        assert "final" in error.details()
    # the same final status with something else to say is refused too
    expect_error(lambda: set_status(manager, job.id, terminal, error="another ending"),
                 grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    # a retry of the very write that ended it is answered with the job, unchanged
    assert set_status(manager, job.id, terminal, error="the end").etag == final.etag
    assert manager.client.jobs.GetJob(S.GetJobRequest(job_id=job.id)).etag == final.etag


def test_pending_cannot_jump_to_completed(manager: Any) -> None:
    job = create(manager)
    expect_error(lambda: set_status(manager, job.id, S.JOB_STATUS_COMPLETED), grpc.StatusCode.FAILED_PRECONDITION,
                 "ILLEGAL_TRANSITION")


def test_unspecified_status_is_invalid(manager: Any) -> None:
    job = create(manager)
    expect_error(lambda: set_status(manager, job.id, S.JOB_STATUS_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT,
                 "INVALID_STATUS", "status")


def test_parent_counters_follow_children_and_the_parent_completes_when_all_are_done(manager: Any) -> None:
    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kids = [create(manager, parent_id=parent.id) for _ in range(3)]
    got = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
    assert (got.progress_current, got.progress_total) == (0, 3)
    for kid in kids:
        set_status(manager, kid.id, S.JOB_STATUS_RUNNING)
    set_status(manager, kids[0].id, S.JOB_STATUS_COMPLETED)
    set_status(manager, kids[1].id, S.JOB_STATUS_FAILED, error="boom")
    stats = manager.client.jobs.GetJobStats(S.GetJobStatsRequest(job_id=parent.id))
    assert (stats.total, stats.completed, stats.failed, stats.running) == (3, 1, 1, 1)
    mid = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
    assert mid.status == S.JOB_STATUS_RUNNING and mid.progress_current == 2
    set_status(manager, kids[2].id, S.JOB_STATUS_COMPLETED)
    final = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
    # One failure with the default tolerance of 0: the parent fails, saying why.
    assert final.status == S.JOB_STATUS_FAILED and final.error_reason == "TOO_MANY_CHILD_FAILURES"
    assert final.progress_current == final.progress_total == 3


def test_cancelling_a_parent_cancels_its_unfinished_children(manager: Any) -> None:
    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kids = [create(manager, parent_id=parent.id) for _ in range(3)]
    set_status(manager, kids[0].id, S.JOB_STATUS_RUNNING)
    set_status(manager, kids[0].id, S.JOB_STATUS_COMPLETED)
    set_status(manager, parent.id, S.JOB_STATUS_CANCELLED)
    statuses = [manager.client.jobs.GetJob(S.GetJobRequest(job_id=k.id)).status for k in kids]
    assert statuses == [S.JOB_STATUS_COMPLETED, S.JOB_STATUS_CANCELLED, S.JOB_STATUS_CANCELLED]


def test_list_jobs_pages_without_gaps_or_repeats(manager: Any) -> None:
    parent = create(manager)
    ids = {create(manager, parent_id=parent.id).id for _ in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = manager.client.jobs.ListJobs(S.ListJobsRequest(parent_id=parent.id, page_size=3, page_token=token))
        seen.extend(job.id for job in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    pending = manager.client.jobs.ListJobs(S.ListJobsRequest(parent_id=parent.id, status=S.JOB_STATUS_RUNNING))
    assert list(pending.jobs) == []
    expect_error(lambda: manager.client.jobs.ListJobs(S.ListJobsRequest(page_token="garbage")),
                 grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "page_token")


def test_logs_are_paged_oldest_first(manager: Any) -> None:
    job = create(manager)
    for n in range(5):
        manager.client.jobs.AddJobLog(S.AddJobLogRequest(job_id=job.id, level=S.LOG_LEVEL_INFO, message=f"line {n}"))
    first = manager.client.jobs.ListJobLogs(S.ListJobLogsRequest(job_id=job.id, page_size=3))
    rest = manager.client.jobs.ListJobLogs(S.ListJobLogsRequest(job_id=job.id, page_token=first.next_page_token))
    assert [log.message for log in [*first.logs, *rest.logs]] == [f"line {n}" for n in range(5)]
    assert rest.next_page_token == ""
    expect_error(lambda: manager.client.jobs.AddJobLog(S.AddJobLogRequest(
        job_id="00000000-0000-4000-8000-000000000000", message="x")), grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")


def test_progress_is_stored(manager: Any) -> None:
    job = create(manager)
    updated = manager.client.jobs.UpdateJobProgress(S.UpdateJobProgressRequest(
        job_id=job.id, progress_current=3, progress_total=10))
    assert (updated.progress_current, updated.progress_total) == (3, 10)


def test_watch_streams_each_change_and_ends_when_terminal(manager: Any) -> None:
    job = create(manager)
    received: list[jobs_pb2.Job] = []

    def watch() -> None:
        for update in manager.client.jobs.WatchJob(S.WatchJobRequest(job_id=job.id), timeout=30):
            received.append(update)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    set_status(manager, job.id, S.JOB_STATUS_RUNNING)
    time.sleep(0.2)
    manager.client.jobs.UpdateJobProgress(S.UpdateJobProgressRequest(job_id=job.id, progress_current=1,
                                                                     progress_total=2))
    time.sleep(0.2)
    set_status(manager, job.id, S.JOB_STATUS_COMPLETED)
    watcher.join(10)
    assert not watcher.is_alive(), "WatchJob did not end after the job became terminal"
    states = [(u.status, u.progress_current) for u in received]
    assert states == [(S.JOB_STATUS_PENDING, 0), (S.JOB_STATUS_RUNNING, 0), (S.JOB_STATUS_RUNNING, 1),
                      (S.JOB_STATUS_COMPLETED, 1)]


def test_watch_of_an_unknown_job_is_not_found(manager: Any) -> None:
    def watch() -> None:
        list(manager.client.jobs.WatchJob(S.WatchJobRequest(job_id="00000000-0000-4000-8000-000000000000"),
                                          timeout=5))
    expect_error(watch, grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")


def test_missing_or_wrong_token_is_unauthenticated_and_writes_nothing(manager: Any) -> None:
    job = create(manager)
    for token in ("", "wrong-token"):
        client = manager.connect(token=token)
        try:
            expect_error(lambda c=client: c.jobs.UpdateJobMetadata(S.UpdateJobMetadataRequest(job_id=job.id)),
                         grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING" if not token else "TOKEN_INVALID")
            expect_error(lambda c=client: c.jobs.CreateJob(S.CreateJobRequest(type="intruder")),
                         grpc.StatusCode.UNAUTHENTICATED)
        finally:
            client.close()
    assert manager.client.jobs.GetJob(S.GetJobRequest(job_id=job.id)).etag == job.etag
    listed = manager.client.jobs.ListJobs(S.ListJobsRequest(page_size=1000)).jobs
    assert all(j.type != "intruder" for j in listed)


def test_many_open_watch_streams_do_not_starve_other_calls(manager: Any) -> None:
    jobs = [create(manager) for _ in range(10)]
    streams = [manager.client.jobs.WatchJob(S.WatchJobRequest(job_id=j.id), timeout=30) for j in jobs]
    try:
        for stream in streams:
            assert next(stream).status == S.JOB_STATUS_PENDING  # every watcher is being served
        started = time.monotonic()
        for job in jobs:
            manager.client.jobs.GetJob(S.GetJobRequest(job_id=job.id), timeout=5)
        assert time.monotonic() - started < 2.0
        set_status(manager, jobs[0].id, S.JOB_STATUS_CANCELLED)
        assert [u.status for u in streams[0]] == [S.JOB_STATUS_CANCELLED]
    finally:
        for stream in streams:
            stream.cancel()


def test_a_watcher_that_leaves_is_forgotten_and_counted_as_cancelled(manager: Any) -> None:
    from quaero.metrics import RPC_TOTAL

    cancelled = RPC_TOTAL.labels("WatchJob", "CANCELLED")
    before = cancelled._value.get()
    job = create(manager)
    stream = manager.client.jobs.WatchJob(S.WatchJobRequest(job_id=job.id), timeout=30)
    assert next(stream).status == S.JOB_STATUS_PENDING
    hub = manager.server.hub
    assert hub.watchers == 1
    stream.cancel()
    deadline = time.monotonic() + 5
    while (hub.watchers or cancelled._value.get() == before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.watchers == 0, "the stream's watcher outlived its client"
    assert cancelled._value.get() == before + 1


def test_stopping_the_manager_ends_open_watch_streams_with_unavailable_at_once(database_url: str,
                                                                                tmp_path: Any) -> None:
    from quaero.testing.harness import start_manager
    from tests.conftest import TOKEN

    running = start_manager(tmp_path / "data", database_url, TOKEN)
    job = create(running)
    stream = running.client.jobs.WatchJob(S.WatchJobRequest(job_id=job.id), timeout=30)
    assert next(stream).status == S.JOB_STATUS_PENDING
    started = time.monotonic()
    threading.Thread(target=running.server.stop, kwargs={"grace": 10}, daemon=True).start()
    expect_error(lambda: next(stream), grpc.StatusCode.UNAVAILABLE, "MANAGER_UNAVAILABLE")
    assert time.monotonic() - started < 3, "the stream waited for the shutdown's grace period"
    running.client.close()


def test_an_expired_lease_returns_the_job_to_pending_and_too_many_attempts_fail_it(clocked_manager: Any) -> None:
    manager = clocked_manager
    from google.protobuf import duration_pb2

    from manager_service.storage.leases import MAX_LEASE_ATTEMPTS

    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kind = f"lease-test-{time.monotonic_ns()}"
    child = create(manager, parent_id=parent.id, type=kind)
    one_second = duration_pb2.Duration(seconds=1)
    executor = manager.connect_as_executor()
    tokens = []
    for attempt in range(1, MAX_LEASE_ATTEMPTS + 1):
        leased = executor.jobs.LeaseJobs(S.LeaseJobsRequest(worker_id="w", max_jobs=5, type=kind,
                                                           lease_duration=one_second)).leased_jobs
        assert [j.job.id for j in leased] == [child.id], f"attempt {attempt}"
        tokens.append(leased[0].lease.lease_token)
        manager.server.stores.clock.advance(1.1)
        executor.jobs.LeaseJobs(S.LeaseJobsRequest(worker_id="w", type="nothing-of-this-type"))  # reaps
        state = manager.client.jobs.GetJob(S.GetJobRequest(job_id=child.id))
        if attempt < MAX_LEASE_ATTEMPTS:
            assert state.status == S.JOB_STATUS_PENDING
    assert state.status == S.JOB_STATUS_FAILED and state.error_reason == "LEASE_ATTEMPTS_EXHAUSTED"
    assert len(set(tokens)) == MAX_LEASE_ATTEMPTS
    # The holder of an old lease cannot write over the job any more.
    expect_error(lambda: executor.jobs.CompleteLeasedJob(S.CompleteLeasedJobRequest(
        job_id=child.id, lease_token=tokens[0], status=S.JOB_STATUS_COMPLETED)), grpc.StatusCode.ABORTED, "LEASE_LOST")
    settled = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
    assert settled.status == S.JOB_STATUS_FAILED and settled.children_failed == 1
    executor.close()


def test_a_completion_retried_after_it_committed_is_answered_not_refused(manager: Any) -> None:
    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kind = f"retry-{time.monotonic_ns()}"
    for name in ("a", "b"):
        manager.client.jobs.BatchCreateChildJobs(S.BatchCreateChildJobsRequest(
            parent_id=parent.id, children=[S.ChildJobSpec(type=kind, name=name, dedup_key=name)]))
    with manager.connect_as_executor() as executor:
        leased = executor.jobs.LeaseJobs(S.LeaseJobsRequest(worker_id="w", max_jobs=2, type=kind)).leased_jobs
        first, second = leased[0], leased[1]
        done = S.CompleteLeasedJobRequest(job_id=first.job.id, lease_token=first.lease.lease_token,
                                          status=S.JOB_STATUS_COMPLETED)
        answer = executor.jobs.CompleteLeasedJob(done)
        again = executor.jobs.CompleteLeasedJob(done)  # the answer to the first was lost: the client retries
        assert again.id == answer.id and again.etag == answer.etag and again.status == S.JOB_STATUS_COMPLETED
        counted = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
        assert counted.progress_current == 1, "the retry did not count the child twice"
        # The same for a give-back (PENDING, for another attempt later).
        back = S.CompleteLeasedJobRequest(job_id=second.job.id, lease_token=second.lease.lease_token,
                                          status=S.JOB_STATUS_PENDING, error="robots.txt answered 503",
                                          error_reason="ROBOTS_UNAVAILABLE")
        assert executor.jobs.CompleteLeasedJob(back).status == S.JOB_STATUS_PENDING
        assert executor.jobs.CompleteLeasedJob(back).status == S.JOB_STATUS_PENDING
        # A different ending with the old token is not a retry: refused.
        expect_error(lambda: executor.jobs.CompleteLeasedJob(S.CompleteLeasedJobRequest(
            job_id=first.job.id, lease_token=first.lease.lease_token, status=S.JOB_STATUS_FAILED)),
            grpc.StatusCode.ABORTED, "LEASE_LOST")


def test_completions_in_one_call_each_get_their_own_outcome(manager: Any) -> None:
    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kind = f"batch-{time.monotonic_ns()}"
    manager.client.jobs.BatchCreateChildJobs(S.BatchCreateChildJobsRequest(
        parent_id=parent.id, children=[S.ChildJobSpec(type=kind, name=n, dedup_key=n) for n in "abcd"]))
    with manager.connect_as_executor() as executor:
        leased = executor.jobs.LeaseJobs(S.LeaseJobsRequest(worker_id="w", max_jobs=4, type=kind)).leased_jobs
        a, b, c, d = (S.CompleteLeasedJobRequest(job_id=job.job.id, lease_token=job.lease.lease_token)
                      for job in leased)
        a.status = S.JOB_STATUS_COMPLETED
        a.document.url, a.document.title = "https://site.test/a", "A"
        a.children.add(type=kind, name="e", dedup_key="e")
        b.status, b.lease_token = S.JOB_STATUS_COMPLETED, "not-the-token"  # refused: that page only
        c.status = S.JOB_STATUS_RUNNING  # not an ending
        d.status, d.error, d.error_reason = S.JOB_STATUS_FAILED, "HTTP 500", "HTTP_ERROR"
        batch = S.CompleteLeasedJobsRequest(completions=[a, b, c, d, a])
        outcomes = executor.jobs.CompleteLeasedJobs(batch).outcomes
        assert [o.code for o in outcomes] == [0, grpc.StatusCode.ABORTED.value[0],
                                              grpc.StatusCode.INVALID_ARGUMENT.value[0], 0,
                                              grpc.StatusCode.INVALID_ARGUMENT.value[0]]
        assert [o.reason for o in outcomes] == ["", "LEASE_LOST", "INVALID_STATUS", "", "DUPLICATE_COMPLETION"]
        assert [o.field for o in outcomes[1:3]] == ["completions[1].lease_token", "completions[2].status"]
        assert outcomes[0].job.status == S.JOB_STATUS_COMPLETED and not outcomes[0].job.HasField("result")
        assert outcomes[3].job.status == S.JOB_STATUS_FAILED and outcomes[3].job.error_reason == "HTTP_ERROR"
        run = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
        assert (run.progress_current, run.progress_total, run.children_failed) == (2, 5, 1)
        # The whole call retried (its answer was lost): the recorded ones are answered, nothing counts twice.
        again = executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(completions=[a, d])).outcomes
        assert [o.code for o in again] == [0, 0] and again[0].job.etag == outcomes[0].job.etag
        assert manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id)).progress_current == 2
        expect_error(lambda: executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(completions=[b] * 101)),
                     grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_COMPLETIONS", "completions")
        assert executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest()).outcomes == []
    expect_error(lambda: manager.client.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(completions=[a])),
                 grpc.StatusCode.PERMISSION_DENIED)


def test_a_worker_completes_a_batch_and_leases_the_next_in_one_call(manager: Any) -> None:
    parent = create(manager)
    set_status(manager, parent.id, S.JOB_STATUS_RUNNING)
    kind = f"loop-{time.monotonic_ns()}"
    manager.client.jobs.BatchCreateChildJobs(S.BatchCreateChildJobsRequest(
        parent_id=parent.id, children=[S.ChildJobSpec(type=kind, dedup_key=str(n)) for n in range(5)]))
    with manager.connect_as_executor() as executor:
        def following(**fields: Any) -> S.LeaseJobsRequest:
            return S.LeaseJobsRequest(**{"worker_id": "loop", "max_jobs": 2, "type": kind, **fields})

        first = executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(lease_next=following())).leased
        done: list[str] = []
        batch = first.leased_jobs
        while batch:
            answer = executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(completions=[
                S.CompleteLeasedJobRequest(job_id=item.job.id, lease_token=item.lease.lease_token,
                                           status=S.JOB_STATUS_COMPLETED) for item in batch], lease_next=following()))
            assert [outcome.code for outcome in answer.outcomes] == [0] * len(batch)
            done += [item.job.id for item in batch]
            assert not {item.job.id for item in answer.leased.leased_jobs} & set(done)  # (recorded first)
            batch = answer.leased.leased_jobs
        assert len(done) == len(set(done)) == 5
        run = manager.client.jobs.GetJob(S.GetJobRequest(job_id=parent.id))
        assert run.status == S.JOB_STATUS_COMPLETED and run.progress_current == 5
        # Without lease_next nothing is leased; a bad lease_next is refused before anything is recorded.
        assert not executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest()).HasField("leased")
        manager.client.jobs.BatchCreateChildJobs(S.BatchCreateChildJobsRequest(
            parent_id=create(manager).id, children=[S.ChildJobSpec(type=kind, dedup_key="x")]))
        [held] = executor.jobs.LeaseJobs(following()).leased_jobs
        record = S.CompleteLeasedJobRequest(job_id=held.job.id, lease_token=held.lease.lease_token,
                                            status=S.JOB_STATUS_COMPLETED)
        expect_error(lambda: executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(
            completions=[record], lease_next=following(worker_id="w" * 129))),
            grpc.StatusCode.INVALID_ARGUMENT, "VALUE_TOO_LONG", "lease_next.worker_id")
        assert manager.client.jobs.GetJob(S.GetJobRequest(job_id=held.job.id)).status == S.JOB_STATUS_RUNNING


def test_one_url_recorded_by_two_runs_in_one_call_is_compared_with_the_first(manager: Any) -> None:
    """A batch reads its URLs' latest stored versions at its start (one statement, not one per page). Two runs
    of one definition recording the same URL in one call: the second record is compared with the first one's
    document, written in this call, not with what the batch read before it (nothing then)."""
    definition, kind, url = f"same-url-{time.monotonic_ns()}", f"same-url-{time.monotonic_ns()}", "https://site.test/p"
    runs = []
    for _ in range(2):
        run = create(manager, config=dict_to_struct({"job_definition_id": definition}))
        set_status(manager, run.id, S.JOB_STATUS_RUNNING)
        manager.client.jobs.BatchCreateChildJobs(S.BatchCreateChildJobsRequest(
            parent_id=run.id, children=[S.ChildJobSpec(type=kind, dedup_key=url)]))
        runs.append(run.id)
    with manager.connect_as_executor() as executor:
        leased = executor.jobs.LeaseJobs(S.LeaseJobsRequest(worker_id="w", max_jobs=2, type=kind)).leased_jobs
        assert len(leased) == 2
        records = [S.CompleteLeasedJobRequest(
            job_id=item.job.id, lease_token=item.lease.lease_token, status=S.JOB_STATUS_COMPLETED,
            document=documents_pb2.Document(url=url, final_url=url, title=f"version {n}", text=f"version {n}",
                                            content_hash=f"{n:064x}", status_code=200))
            for n, item in enumerate(leased, start=1)]
        outcomes = executor.jobs.CompleteLeasedJobs(S.CompleteLeasedJobsRequest(completions=records)).outcomes
        assert [outcome.code for outcome in outcomes] == [0, 0]
    kinds = {}
    for n, item in enumerate(leased, start=1):
        [document] = manager.client.documents.ListDocuments(documents_pb2.ListDocumentsRequest(
            parent_job_id=item.job.parent_id)).documents
        kinds[n] = document.kind
    assert kinds == {1: documents_pb2.DOCUMENT_KIND_NEW, 2: documents_pb2.DOCUMENT_KIND_CHANGED}


def test_every_rpc_takes_any_spelling_of_a_job_id_and_answers_the_canonical_one(manager: Any) -> None:
    parent = create(manager)
    child = create(manager, parent_id=parent.id)
    manager.client.jobs.AddJobLog(S.AddJobLogRequest(job_id=parent.id, message="hello"))
    for spelling in (parent.id.upper(), "{" + parent.id + "}", "urn:uuid:" + parent.id, parent.id.replace("-", "")):
        assert manager.client.jobs.GetJob(S.GetJobRequest(job_id=spelling)).id == parent.id
        stats = manager.client.jobs.GetJobStats(S.GetJobStatsRequest(job_id=spelling))
        assert stats.total == 1 and stats.job_id == parent.id
        logs = manager.client.jobs.ListJobLogs(S.ListJobLogsRequest(job_id=spelling)).logs
        assert [log.message for log in logs] == ["hello"] and logs[0].job_id == parent.id
        assert [j.id for j in manager.client.jobs.ListJobs(S.ListJobsRequest(parent_id=spelling)).jobs] == [child.id]
        progressed = manager.client.jobs.UpdateJobProgress(S.UpdateJobProgressRequest(job_id=spelling))
        assert progressed.id == parent.id
        first = next(iter(manager.client.jobs.WatchJob(S.WatchJobRequest(job_id=spelling), timeout=5)))
        assert first.id == parent.id


def test_a_stopped_manager_leaves_no_threads_behind(tmp_path: Any) -> None:
    from quaero.testing.harness import start_manager
    from tests.conftest import TOKEN

    def ours() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name.startswith(("rpc-", "watch-"))}

    before = ours()
    running = start_manager(tmp_path / "data", None, TOKEN)
    job = create(running)
    assert next(iter(running.client.jobs.WatchJob(S.WatchJobRequest(job_id=job.id), timeout=5))).id == job.id
    assert ours() - before, "the manager's workers and stream senders are threads"
    running.close()
    deadline = time.monotonic() + 5
    while ours() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ours() - before, sorted(thread.name for thread in ours() - before)


def test_a_client_that_reads_nothing_is_cut_off_and_the_others_keep_streaming(sqlite_manager: Any) -> None:
    manager = sqlite_manager
    manager.server.streams.senders.stall_seconds = 1.0
    job = create(manager)
    # A client that never reads, with the smallest HTTP/2 window gRPC allows: the manager's sends block.
    stuck_channel = grpc.insecure_channel(manager.address, options=[("grpc.http2.lookahead_bytes", 1),
                                                                     ("grpc.http2.bdp_probe", 0)])
    stuck = jobs_pb2_grpc.JobManagerStub(stuck_channel).WatchJob(
        S.WatchJobRequest(job_id=job.id), timeout=60, metadata=(("authorization", f"Bearer {manager.token}"),))
    received: list[int] = []

    def read() -> None:
        for update in manager.client.jobs.WatchJob(S.WatchJobRequest(job_id=job.id), timeout=60):
            received.append(update.progress_current)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    hub = manager.server.hub
    deadline = time.monotonic() + 30
    # Both streams registered first: with one of them not yet there, "one watcher left" held at once (and
    # the stuck stream, never cut off, then ran into its deadline: a flake, seen once).
    while hub.watchers != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.watchers == 2
    n = 0
    while hub.watchers != 1 and time.monotonic() < deadline:  # the stuck stream is gone, the reader stays
        n += 1
        manager.client.jobs.UpdateJobProgress(S.UpdateJobProgressRequest(job_id=job.id, progress_current=n,
                                                                         progress_total=1000))
        time.sleep(0.25)
    assert hub.watchers == 1, "the stream whose client reads nothing was never cut off"
    with pytest.raises(grpc.RpcError) as ended:
        for _update in stuck:  # what got through before the window filled, then the end
            pass
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    set_status(manager, job.id, S.JOB_STATUS_RUNNING)
    set_status(manager, job.id, S.JOB_STATUS_COMPLETED)
    reader.join(10)
    assert not reader.is_alive() and received[-1] == n, "the reading stream missed the end"
    stuck_channel.close()
