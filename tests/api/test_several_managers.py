"""Several managers on one PostgreSQL: a change made through one reaches watchers on another at once
(LISTEN/NOTIFY), and a client given both addresses spreads its calls over them."""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.testing.harness import RunningManager, start_manager


@pytest.fixture
def two_managers(postgres_url: str, tmp_path: Path) -> Iterator[tuple[RunningManager, RunningManager]]:
    first = start_manager(tmp_path / "a", postgres_url, token="shared-token", executor_token="shared-executor")
    second = start_manager(tmp_path / "b", postgres_url, token="shared-token", executor_token="shared-executor")
    yield first, second
    first.close()
    second.close()


def test_a_change_through_one_manager_reaches_a_watcher_on_another_within_100_ms(
        two_managers: tuple[RunningManager, RunningManager]) -> None:
    writer, watched = two_managers
    job = writer.client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t", name="watched elsewhere"))
    writer.client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING))
    arrivals: dict[int, float] = {}
    stream = watched.client.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=60)
    first = next(stream)
    assert first.status == jobs_pb2.JOB_STATUS_RUNNING

    def listen() -> None:
        for update in stream:
            arrivals[int(update.progress_current)] = time.perf_counter()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    delays = []
    for n in range(1, 6):
        time.sleep(0.3)  # past the stream's pace: each change is sent as soon as it is heard
        sent = time.perf_counter()
        writer.client.jobs.UpdateJobProgress(jobs_pb2.UpdateJobProgressRequest(job_id=job.id, progress_current=n,
                                                                               progress_total=5))
        deadline = time.monotonic() + 5
        while n not in arrivals and time.monotonic() < deadline:
            time.sleep(0.002)
        assert n in arrivals, f"change {n} never reached the other manager's watcher"
        delays.append(arrivals[n] - sent)
    writer.client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=job.id,
                                                                       status=jobs_pb2.JOB_STATUS_COMPLETED))
    listener.join(5)
    assert statistics.median(delays) < 0.1, delays


def test_a_client_given_both_addresses_fails_over_when_one_stops(
        two_managers: tuple[RunningManager, RunningManager]) -> None:
    first, second = two_managers
    with ManagerClient.connect(f"{first.address},{second.address}", "shared-token") as client:
        before = [client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="balanced", name=str(n))).id for n in range(20)]
        first.server.stop(grace=0)
        after = [client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="balanced", name=str(n)), timeout=10).id
                 for n in range(20)]
    assert len(set(before + after)) == 40
    listed = second.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000)).jobs
    assert {job.id for job in listed} >= set(before + after)
