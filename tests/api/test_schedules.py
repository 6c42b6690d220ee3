"""Schedules through the public API, with the manager's clock injected (moved by the test) and its
scheduler's look called directly, on SQLite and PostgreSQL: a tick starts one ordinary run (metadata before
children, started by the schedule), overlap policies, catch-up after downtime, pause and resume, next fire
times in GetJobDefinition and the metrics, and a daily time across the autumn daylight saving change."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from manager_service.metrics import SCHEDULE_NEXT_FIRE
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.convert import struct_to_dict
from quaero.testing.harness import RunningManager

START = datetime(2026, 5, 4, 10, 0, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_schedules_left(clocked_manager: RunningManager) -> Any:
    """Each test's schedules go with it (PostgreSQL's test database is shared by the session's tests)."""
    yield
    definitions = clocked_manager.client.definitions
    for stored in definitions.ListJobDefinitions(definitions_pb2.ListJobDefinitionsRequest(page_size=1000)).job_definitions:
        if stored.HasField("schedule"):
            definitions.DeleteJobDefinition(definitions_pb2.DeleteJobDefinitionRequest(id=stored.id))


def scheduled(manager: RunningManager, cron: str, at: datetime = START, auth_id: str = "",
              **schedule: Any) -> str:
    """A definition with this schedule, created when the clock reads `at` (its ticks count from then)."""
    manager.server.stores.clock.set(at)
    message = definitions_pb2.Schedule(cron=cron, timezone=schedule.pop("timezone", "UTC"),
                                       paused=schedule.pop("paused", False))
    message.overlap = {"skip": definitions_pb2.OVERLAP_SKIP, "buffer_one": definitions_pb2.OVERLAP_BUFFER_ONE,
                       "cancel_previous": definitions_pb2.OVERLAP_CANCEL_PREVIOUS}[schedule.pop("overlap", "skip")]
    if "catchup" in schedule:
        message.catchup_window.FromTimedelta(schedule.pop("catchup"))
    definition = definitions_pb2.JobDefinition(
        id=f"sched-{abs(hash((cron, at, auth_id, str(message)))) % 10**9}", auth_id=auth_id, schedule=message,
        crawl=definitions_pb2.CrawlConfig(start_urls=["http://127.0.0.1:9/start", "http://127.0.0.1:9/other"],
                                          allowed_networks=["127.0.0.1/32"]))
    return manager.client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
        job_definition=definition)).id


def look_at(manager: RunningManager, moment: datetime) -> None:
    manager.server.stores.clock.set(moment)
    manager.server.fire_schedules()


def runs_of(manager: RunningManager, definition_id: str) -> list[jobs_pb2.Job]:
    """The definition's runs, oldest first."""
    runs = [job for job in manager.client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000)).jobs
            if job.definition_id == definition_id]
    return sorted(runs, key=lambda job: struct_to_dict(job.metadata).get("schedule_tick", ""))


def ticks_of(runs: list[jobs_pb2.Job]) -> list[str]:
    return [struct_to_dict(job.metadata)["schedule_tick"][11:19] for job in runs]


def tick_rows(manager: RunningManager, definition_id: str) -> list[tuple[str, str, int]]:
    with manager.server.stores.db.read_engine.connect() as conn:
        return [(str(tick)[11:19], status, count) for tick, status, count in conn.execute(sa.text(
            "SELECT tick_at, status, count FROM schedule_ticks WHERE definition_id = :d ORDER BY tick_at"),
            {"d": definition_id})]


def test_each_tick_starts_one_ordinary_run_started_by_the_schedule(clocked_manager: RunningManager) -> None:
    manager = clocked_manager
    manager.client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="sched-auth", site_domain="127.0.0.1",
                                                                       cookies=[auth_pb2.Cookie(
                                                                           name="sid", value="v", domain="127.0.0.1",
                                                                           path="/")]))
    definition = scheduled(manager, "*/10 * * * *", auth_id="sched-auth", overlap="cancel_previous")
    look_at(manager, START + timedelta(minutes=9))
    assert runs_of(manager, definition) == []
    look_at(manager, START + timedelta(minutes=10))  # 10:10:30: the 10:10 tick
    manager.server.fire_schedules()  # (a second look, as another manager's, changes nothing)
    [first] = runs_of(manager, definition)
    metadata = struct_to_dict(first.metadata)
    assert metadata["started_by"] == "schedule" and metadata["auth_id"] == "sched-auth"
    assert metadata["job_definition_id"] == definition and metadata["schedule_tick"].startswith("2026-05-04T10:10:00")
    assert first.status == jobs_pb2.JOB_STATUS_RUNNING and first.progress_total == 2
    children = list(manager.client.iter_children(first.id))
    assert sorted(struct_to_dict(c.config)["url"] for c in children) == ["http://127.0.0.1:9/other",
                                                                         "http://127.0.0.1:9/start"]
    # Two ticks passed at once (within the catch-up window): each starts its run, cancelling the one before.
    look_at(manager, START + timedelta(minutes=30))
    runs = runs_of(manager, definition)
    assert ticks_of(runs) == ["10:10:00", "10:20:00", "10:30:00"]
    assert [run.status for run in runs] == [jobs_pb2.JOB_STATUS_CANCELLED] * 2 + [jobs_pb2.JOB_STATUS_RUNNING]
    assert runs[0].error_reason == "CANCELLED_BY_SCHEDULE"


def test_overlap_skip_and_buffer_one(clocked_manager: RunningManager) -> None:
    manager = clocked_manager
    skip = scheduled(manager, "*/10 * * * *", overlap="skip")
    buffer = scheduled(manager, "*/10 * * * *", overlap="buffer_one")
    for minutes in (10, 20, 30):
        look_at(manager, START + timedelta(minutes=minutes))
    assert ticks_of(runs_of(manager, skip)) == ["10:10:00"]
    assert [status for _t, status, _c in tick_rows(manager, skip)] == ["started", "skipped", "skipped"]
    assert ticks_of(runs_of(manager, buffer)) == ["10:10:00"]
    assert [status for _t, status, _c in tick_rows(manager, buffer)] == ["started", "buffered", "skipped"]
    # The running run ends: the buffered tick starts at the next look.
    [running] = runs_of(manager, buffer)
    manager.client.jobs.UpdateJobStatus(jobs_pb2.UpdateJobStatusRequest(job_id=running.id,
                                                                        status=jobs_pb2.JOB_STATUS_CANCELLED))
    manager.server.fire_schedules()
    manager.server.fire_schedules()
    assert ticks_of(runs_of(manager, buffer)) == ["10:10:00", "10:20:00"]


def test_missed_ticks_inside_the_catchup_window_fire_and_older_ones_are_skipped(clocked_manager: RunningManager,
                                                                                caplog: pytest.LogCaptureFixture
                                                                                ) -> None:
    manager = clocked_manager
    definition = scheduled(manager, "*/10 * * * *", overlap="cancel_previous", catchup=timedelta(minutes=25))
    # No manager looked for an hour: 10:10 ... 11:00 passed; 10:40, 10:50 and 11:00 are within 25 minutes.
    with caplog.at_level("WARNING", logger="quaero.manager.schedules"):
        look_at(manager, START + timedelta(minutes=60))
    assert ticks_of(runs_of(manager, definition)) == ["10:40:00", "10:50:00", "11:00:00"]
    assert tick_rows(manager, definition)[0] == ("10:30:00", "missed", 3)
    assert "event=schedule_ticks_missed" in caplog.text and "count=3" in caplog.text


def test_pause_and_resume_without_catching_up(clocked_manager: RunningManager) -> None:
    manager = clocked_manager
    definition = scheduled(manager, "*/10 * * * *", paused=True)
    stored = manager.client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition))
    assert list(stored.next_fire_times) == []
    look_at(manager, START + timedelta(minutes=25))
    assert runs_of(manager, definition) == []
    stored.schedule.paused = False
    resumed = manager.client.definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(
        job_definition=stored))
    assert [t.ToDatetime().strftime("%H:%M") for t in resumed.next_fire_times] == ["10:30", "10:40", "10:50"]
    manager.server.fire_schedules()
    assert runs_of(manager, definition) == []  # the paused ticks are not caught up
    assert SCHEDULE_NEXT_FIRE.labels(definition)._value.get() == datetime(2026, 5, 4, 10, 30, tzinfo=UTC).timestamp()
    look_at(manager, START + timedelta(minutes=30))
    assert ticks_of(runs_of(manager, definition)) == ["10:30:00"]


def test_a_daily_time_in_berlin_fires_once_a_day_across_the_autumn_change(clocked_manager: RunningManager) -> None:
    manager = clocked_manager
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    definition = scheduled(manager, "30 2 * * *", at=start, timezone="Europe/Berlin", overlap="cancel_previous")
    for hours in range(1, 73):  # a look every hour for three days
        look_at(manager, start + timedelta(hours=hours))
    runs = runs_of(manager, definition)
    assert [struct_to_dict(run.metadata)["schedule_tick"][:16] for run in runs] == [
        "2026-10-25T00:30", "2026-10-26T01:30", "2026-10-27T01:30"]
