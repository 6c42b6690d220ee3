"""The watch hub: one read per change per watched job, whatever the number of watchers; the newest state
only; the final state at once; a read calls only the streams waiting for news."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from manager_service.storage.records import Job
from manager_service.watch import Watcher, WatchHub
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
        self.one_reads: list[str] = []
        self.lock = threading.Lock()

    def read_one(self, job_id: str) -> Job:
        self.one_reads.append(job_id)
        return self.rows[job_id]

    def read(self, ids: Sequence[str]) -> dict[str, Job]:
        with self.lock:
            self.reads.append(list(ids))
            return {i: self.rows[i] for i in ids if i in self.rows}


def read_by_hub(hub: WatchHub, table: Table, job_id: str = "a") -> None:
    """Waits until the hub has read and published the table's current row of the job."""
    deadline = time.monotonic() + 2
    while hub.latest(job_id) is not table.rows[job_id]:
        assert time.monotonic() < deadline, "the hub never read the change"
        time.sleep(0.005)


def news_of(watcher: Watcher, timeout: float = 2.0) -> Job | None:
    """Waits for a state the watcher has not taken, as a stream waiting on the topic does."""
    arrived = threading.Event()
    watcher.call_on_news(arrived.set)
    return watcher.take() if arrived.wait(timeout) else None


def test_one_read_per_burst_of_changes_fanned_out_to_every_watcher() -> None:
    table = Table()
    hub = WatchHub(table.read)
    watchers = [hub.watch("a") for _ in range(200)]
    other = hub.watch("b")
    for n in range(1, 6):  # a burst: five writes to "a"
        table.rows["a"] = job("a", n)
        hub.changed(["a", "unwatched"])
    states = [news_of(w) for w in watchers]
    assert all(state is not None and state.progress_current == 5 for state in states), "the newest state only"
    assert len(table.reads) == 1 and table.reads[0] == ["a"], table.reads
    assert news_of(other, 0.05) is None, "a watcher of another job hears nothing"
    hub.stop()


def test_the_final_state_ends_the_wait_at_once_and_unwatched_jobs_cost_no_read() -> None:
    table = Table()
    hub = WatchHub(table.read)
    hub.changed(["a"])  # nobody watches: nothing read
    ended = threading.Event()
    watcher = hub.watch("a", on_end=ended.set)
    table.rows["a"] = job("a", 9)
    hub.changed(["a"])
    assert news_of(watcher) is not None and not ended.is_set()
    table.rows["a"] = replace(job("a", 10), status=JobStatus.COMPLETED)
    hub.changed(["a"])
    assert ended.wait(2), "the end did not reach the stream"
    final = watcher.take()
    assert final is not None and final.status == JobStatus.COMPLETED
    assert table.reads == [["a"], ["a"]]
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
    offered = news_of(first)
    assert offered is not None and hub.latest("a") is offered  # the very object every watcher got
    second = hub.watch("a")
    assert hub.first_state("a", lambda _id: job("a", 99)) is offered and len(table.reads) == 1, "no read of its own"
    assert second.take() is None, "a state read before the stream began is its first message, not news"
    hub.unwatch(first)
    hub.unwatch(second)
    assert hub.latest("a") is None  # nobody watches: no stale state kept for the next one
    third, fourth = hub.watch("a"), hub.watch("a")
    own = hub.first_state("a", table.read_one)
    assert hub.first_state("a", table.read_one) is own and len(table.one_reads) == 1, "a stream's own read serves the next"
    hub.unwatch(third)
    hub.unwatch(fourth)
    hub.stop()


def test_a_read_calls_only_the_streams_waiting_and_each_takes_a_state_once() -> None:
    table = Table()
    hub = WatchHub(table.read)
    waiting, paced = hub.watch("a"), hub.watch("a")
    calls: list[str] = []
    waiting.call_on_news(lambda: calls.append("waiting"))
    for n in (1, 2, 3):
        table.rows["a"] = job("a", n)
        hub.changed(["a"])
        read_by_hub(hub, table)
    assert calls == ["waiting"], "a stream is called once per wait, and a stream not waiting is not called"
    newest = paced.take()
    assert newest is not None and newest.progress_current == 3, "the newest state, coalesced"
    assert paced.take() is None, "a state is taken once"
    assert waiting.take() is newest, "both streams get the one object the hub read"
    called = threading.Event()
    paced.call_on_news(called.set)
    assert not called.is_set()
    table.rows["a"] = job("a", 4)
    hub.changed(["a"])
    assert called.wait(2)
    hub.unwatch(waiting)
    hub.unwatch(paced)
    hub.stop()


def test_a_write_that_leaves_status_and_progress_alone_is_not_news_but_is_the_next_first_message() -> None:
    table = Table()
    hub = WatchHub(table.read)
    watcher = hub.watch("a")
    table.rows["a"] = job("a", 1)
    hub.changed(["a"])
    assert news_of(watcher) is not None
    called = threading.Event()
    watcher.call_on_news(called.set)
    table.rows["a"] = replace(job("a", 1), metadata={"phase": "execution"})
    hub.changed(["a"])
    read_by_hub(hub, table)
    assert not called.wait(0.1), "a metadata write woke the waiting streams"
    latest = hub.latest("a")
    assert latest is not None and latest.metadata == {"phase": "execution"}, "a new stream starts from it"
    hub.unwatch(watcher)
    hub.stop()
