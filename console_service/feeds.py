"""Live runs for any number of browsers at the cost of one: a run's feed holds ONE WatchJob stream to the
manager, and after a change re-reads the run and its counts at most twice a second (its log tail at most
once a second); every browser
watching the run follows the feed, coalesced to at most two updates a second each. The feed ends when the
last browser leaves, or once the run is over and its final state has been read."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from quaero.api.manager.v1 import jobs_pb2, jobs_pb2_grpc
from quaero.client import AsyncClients

from .views import TERMINAL

log = logging.getLogger(__name__)
MIN_INTERVAL = 0.5  # seconds between two updates: at most 2 a second, per feed and per browser
QUIET_REFRESH = 5.0  # a running run's log may grow with no change to the run itself: read it this often
LOG_TAIL = 30
# The tail of a run's log is its dearest read (the logs of every page of the run: 14 ms of manager CPU for
# 10,000 pages, against 2 ms for the counts): once a second is enough for a person reading it.
LOG_INTERVAL = 1.0


@dataclass(frozen=True)
class Snapshot:
    version: int
    job: jobs_pb2.Job
    stats: jobs_pb2.JobStats
    logs: list[jobs_pb2.JobLog]  # newest first
    final: bool
    problem: str = ""


@dataclass
class Feed:
    run_id: str
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # the run changed since the last read
    updated: asyncio.Condition = field(default_factory=asyncio.Condition)  # a new snapshot is out
    snapshot: Snapshot | None = None
    followers: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _newer(feed: Feed, seen: int) -> bool:
    return feed.snapshot is not None and feed.snapshot.version > seen


class Feeds:
    def __init__(self, clients: AsyncClients, min_interval: float = MIN_INTERVAL) -> None:
        self.clients = clients
        self.min_interval = min_interval
        self._feeds: dict[str, Feed] = {}

    @property
    def streams(self) -> int:
        """WatchJob streams open to the manager (one per watched run)."""
        return len(self._feeds)

    async def follow(self, run_id: str) -> AsyncIterator[Snapshot]:
        """The run's snapshots as they change (at most 2 a second), ending with the final one."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = Feed(run_id)
            feed.changed.set()
            feed.tasks = [asyncio.create_task(self._watch(feed)), asyncio.create_task(self._refresh(feed))]
        feed.followers += 1
        seen = 0
        try:
            while True:
                async with feed.updated:
                    await feed.updated.wait_for(functools.partial(_newer, feed, seen))
                snapshot = feed.snapshot
                assert snapshot is not None
                seen = snapshot.version
                yield snapshot
                if snapshot.final:
                    return
                await asyncio.sleep(self.min_interval)
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
                for task in feed.tasks:
                    task.cancel()

    async def _watch(self, feed: Feed) -> None:
        """The one stream: every change marks the feed changed; a broken stream (a manager restart) is
        opened again."""
        while True:
            try:
                async for job in self.clients.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=feed.run_id)):
                    feed.changed.set()
                    if job.status in TERMINAL:
                        return
                return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    log.warning("event=console_watch_failed run=%s code=%s", feed.run_id,
                                error.code().name)  # type: ignore[attr-defined]
                    feed.changed.set()
                    return
                await asyncio.sleep(1)

    async def _refresh(self, feed: Feed) -> None:
        version, tail_read = 0, float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.changed.wait(), QUIET_REFRESH)
            feed.changed.clear()
            version += 1
            tail_due = loop.time() - tail_read >= LOG_INTERVAL
            if tail_due:
                tail_read = loop.time()
            snapshot = await self._read(feed, version, tail_due)
            async with feed.updated:
                feed.snapshot = snapshot
                feed.updated.notify_all()
            if snapshot.final:
                return
            await asyncio.sleep(self.min_interval)

    async def _read(self, feed: Feed, version: int, tail_due: bool) -> Snapshot:
        """The run and its counts, and its log's tail when due (else the last one read, but for the last word
        on a run that ended). The manager out of reach: the last snapshot, saying so."""
        jobs, previous = self.clients.jobs, feed.snapshot
        try:
            job, stats, tail = await read_run(jobs, feed.run_id, with_tail=tail_due or previous is None)
            final = job.status in TERMINAL
            if tail is None:
                assert previous is not None
                tail = await log_tail(jobs, feed.run_id) if final else previous.logs
        except grpc.RpcError as error:
            problem = f"the manager did not answer ({error.code().name}); retrying"  # type: ignore[attr-defined]
            if previous is None:
                return Snapshot(version, jobs_pb2.Job(id=feed.run_id), jobs_pb2.JobStats(), [], False, problem)
            return replace(previous, version=version, final=False, problem=problem)
        return Snapshot(version, job, stats, tail, final)


async def log_tail(jobs: jobs_pb2_grpc.JobManagerStub, run_id: str) -> list[jobs_pb2.JobLog]:
    """The newest lines of a run's log and its pages' logs, newest first."""
    answer = await jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(job_id=run_id, include_children=True,
                                                                newest_first=True, page_size=LOG_TAIL))
    return list(answer.logs)


async def read_run(jobs: jobs_pb2_grpc.JobManagerStub, run_id: str, with_tail: bool = True
                   ) -> tuple[jobs_pb2.Job, jobs_pb2.JobStats, list[jobs_pb2.JobLog] | None]:
    """What a run's page shows of it: the run, its counts by status and (with_tail) its log's tail, read
    at once."""
    reads: list[Any] = [jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run_id)),
                        jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=run_id))]
    if with_tail:
        reads.append(log_tail(jobs, run_id))
    job, stats, *tail = await asyncio.gather(*reads)
    return job, stats, tail[0] if tail else None
