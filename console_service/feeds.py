"""Live runs for any number of browsers at the cost of one: a run's feed holds ONE WatchJob stream to the
manager, and after a change re-reads the run's counts and log tail at most twice a second; every browser
watching the run follows the feed, coalesced to at most two updates a second each. The feed ends when the
last browser leaves, or once the run is over and its final state has been read."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from quaero.api.manager.v1 import jobs_pb2
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
        version, logs_read = 0, 0.0
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.changed.wait(), QUIET_REFRESH)
            feed.changed.clear()
            version += 1
            previous = feed.snapshot
            fresh_logs = previous is None or loop.time() - logs_read >= LOG_INTERVAL
            snapshot = await self._read(feed.run_id, version, None if fresh_logs or previous is None else previous.logs)
            if fresh_logs:
                logs_read = loop.time()
            elif snapshot.final:  # the last word: read the tail once more
                snapshot = await self._read(feed.run_id, version)
            async with feed.updated:
                feed.snapshot = snapshot
                feed.updated.notify_all()
            if snapshot.final:
                return
            await asyncio.sleep(self.min_interval)

    async def _read(self, run_id: str, version: int, logs: list[jobs_pb2.JobLog] | None = None) -> Snapshot:
        """The run, its counts and (unless given) its log's tail."""
        jobs = self.clients.jobs
        try:
            job, stats, tail = await asyncio.gather(
                jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run_id)),
                jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=run_id)),
                _given(logs) if logs is not None else self._tail(run_id))
        except grpc.RpcError as error:
            problem = f"the manager did not answer ({error.code().name}); retrying"  # type: ignore[attr-defined]
            previous = jobs_pb2.Job(id=run_id)
            return Snapshot(version, previous, jobs_pb2.JobStats(), [], final=False, problem=problem)
        return Snapshot(version, job, stats, tail, final=job.status in TERMINAL)

    async def _tail(self, run_id: str) -> list[jobs_pb2.JobLog]:
        answer = await self.clients.jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(
            job_id=run_id, include_children=True, newest_first=True, page_size=LOG_TAIL))
        return list(answer.logs)


async def _given(logs: list[jobs_pb2.JobLog]) -> list[jobs_pb2.JobLog]:
    return logs
