"""The watch hub: one read per change per watched job, whatever the number of watchers; the newest state
only; the final state at once."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from manager_service.storage.records import Job
from manager_service.watch import WatchHub
from quaero.job_status import JobStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str, current: int = 0, status: JobStatus = JobStatus.RUNNING) -> Job:
    return Job(id=job_id, parent_id=None, type="t", name="n", status=status, config={}, metadata={}, result={},
               error="", error_reason="", progress_current=current, progress_total=10, children_failed=0, depth=0,
               version=1, request_id=None, dedup_key=None, lease_token=None, lease_owner=None, lease_expires_at=None,
               attempts=0, not_before=None, created_at=NOW, started_at=None, finished_at=None, updated_at=NOW,
               metadata_version=1)


class Table:
    def __init__(self) -> None:
        self.rows = {"a": job("a"), "b": job("b")}
        self.reads: list[list[str]] = []
        self.lock = threading.Lock()

    def read(self, ids: Sequence[str]) -> dict[str, Job]:
        with self.lock:
            self.reads.append(list(ids))
            return {i: self.rows[i] for i in ids if i in self.rows}


def test_one_read_per_burst_of_changes_fanned_out_to_every_watcher() -> None:
    table = Table()
    hub = WatchHub(table.read)
    watchers = [hub.watch("a") for _ in range(200)]
    other = hub.watch("b")
    for n in range(1, 6):  # a burst: five writes to "a"
        table.rows["a"] = job("a", n)
        hub.changed(["a", "unwatched"])
    states = [w.take(2.0) for w in watchers]
    assert all(state is not None and state.progress_current == 5 for state in states), "the newest state only"
    assert len(table.reads) == 1 and table.reads[0] == ["a"], table.reads
    assert other.take(0.05) is None, "a watcher of another job hears nothing"
    hub.stop()


def test_the_final_state_ends_a_pause_at_once_and_unwatched_jobs_cost_no_read() -> None:
    table = Table()
    hub = WatchHub(table.read)
    hub.changed(["a"])  # nobody watches: nothing read
    watcher = hub.watch("a")
    done = threading.Event()

    def paused() -> None:
        watcher.pause(30)
        done.set()

    threading.Thread(target=paused, daemon=True).start()
    table.rows["a"] = replace(job("a", 10), status=JobStatus.COMPLETED)
    hub.changed(["a"])
    assert done.wait(2), "the end did not wait for the stream's turn"
    final = watcher.take(1)
    assert final is not None and final.status == JobStatus.COMPLETED
    assert table.reads == [["a"]]
    hub.unwatch(watcher)
    assert hub.watchers == 0
    hub.stop()


def test_the_pace_of_each_stream_follows_the_number_of_streams() -> None:
    hub = WatchHub(Table().read)
    assert hub.stream_interval() == 0.2
    many = [hub.watch("a") for _ in range(1500)]
    assert hub.stream_interval() == 10.0
    for watcher in many:
        hub.unwatch(watcher)
    assert hub.stream_interval() == 0.2
    hub.stop()


def test_a_new_watcher_starts_from_the_newest_state_read_which_is_forgotten_with_the_last_watcher() -> None:
    table = Table()
    hub = WatchHub(table.read)
    first = hub.watch("a")
    assert hub.latest("a") is None  # nothing read yet: the stream reads the job itself
    table.rows["a"] = job("a", 3)
    hub.changed(["a"])
    offered = first.take(2.0)
    assert offered is not None and hub.latest("a") is offered  # the very object every watcher got
    second = hub.watch("a")
    assert hub.latest("a") is offered and len(table.reads) == 1  # no read for the second stream
    hub.unwatch(first)
    hub.unwatch(second)
    assert hub.latest("a") is None  # nobody watches: no stale state kept for the next one
    hub.stop()
