"""Exactly one run per tick with two managers on one PostgreSQL, as processes whose clocks differ (one runs
3 s ahead, the other 2 s behind): a schedule ticking every second runs through 20+ ticks, one manager is
killed (kill -9) half-way, and every tick from the first to the last has exactly one run."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import psycopg

from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.convert import struct_to_dict
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import start_executor, start_manager
from tests.support.sites import members_site


def test_two_managers_one_killed_exactly_one_run_per_tick(tmp_path: Path, postgres_url: str) -> None:
    shared = {"QUAERO_DATABASE_URL": postgres_url, "QUAERO_API_TOKEN": "tick-operator",
              "QUAERO_EXECUTOR_TOKEN": "tick-executor", "QUAERO_SECRET_KEY": "one passphrase for both managers"}
    site = members_site(1, "tick-session", delay=0)
    managers = [start_manager({**shared, "QUAERO_DATA_DIR": str(tmp_path / f"m{n}"),
                               "QUAERO_CLOCK_OFFSET_SECONDS": offset}) for n, offset in ((1, "3"), (2, "-2"))]
    executor = start_executor({**shared, "QUAERO_DATA_DIR": str(tmp_path / "e")},
                              ",".join(manager.address for manager in managers), extra=["--workers", "4"])
    definition_id = f"tick-{time.monotonic_ns()}"
    try:
        with ManagerClient.connect(managers[1].address, "tick-operator") as client:
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(
                    id=definition_id, crawl=definitions_pb2.CrawlConfig(
                        start_urls=[f"http://127.0.0.1:{site.port}/p/0"], allowed_networks=[LOCAL_SITES]),
                    schedule=definitions_pb2.Schedule(cron="* * * * * *",
                                                      overlap=definitions_pb2.OVERLAP_CANCEL_PREVIOUS))))
            time.sleep(11)
            managers[0].kill9()  # the manager whose clock is ahead, which fired most ticks so far
            time.sleep(13)
            stored = client.definitions.GetJobDefinition(definitions_pb2.GetJobDefinitionRequest(id=definition_id))
            stored.schedule.paused = True
            client.definitions.UpdateJobDefinition(definitions_pb2.UpdateJobDefinitionRequest(job_definition=stored))
            time.sleep(1.5)  # (a look that began before the pause ends)
            runs = [job for job in client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000)).jobs
                    if job.definition_id == definition_id]
    finally:
        executor.stop()
        for manager in managers[1:]:
            manager.stop()
        site.stop()

    ticks = sorted(datetime.fromisoformat(struct_to_dict(run.metadata)["schedule_tick"]) for run in runs)
    assert len(ticks) >= 20, len(ticks)
    assert len(set(ticks)) == len(ticks), "a tick started two runs"
    seconds = [int(tick.timestamp()) for tick in ticks]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a tick between the first and last has no run"
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        recorders = dict(conn.execute("SELECT recorded_by, count(*) FROM schedule_ticks WHERE definition_id = %s "
                                      "AND status = 'started' GROUP BY recorded_by", (definition_id,)).fetchall())
    assert len(recorders) == 2 and min(recorders.values()) >= 5, recorders  # both managers fired ticks
