"""Each page reads its parent (GetJob) for the run's status, settings and auth_id: the design's rule, so
that what children need comes from the database, never from a copy in memory. Pages of one run that ask
at the same time share one read: a page joins the next read of its parent that starts after it asked,
never one already on the wire, so every page still sees its parent as the database had it after the
page began. With 16 pages of a run in flight, that was one GetJob per page and ~10% of the executor's
and of the manager's CPU in a crawl (see README, Benchmarks)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .crawl.control import Control, FetchAborted

# A page waiting for a read another page leads checks its own cancellation this often.
FOLLOWER_CHECK_SECONDS = 0.1


@dataclass
class _Read:
    number: int = 0  # when it went on the wire (ParentReads counts them)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Parent:
    on_the_wire: _Read | None = None
    next: _Read | None = None  # (starts when the one on the wire ends; pages that ask meanwhile join it)


class ParentReads:
    def __init__(self, read: Callable[[str, Control], Any]) -> None:
        """`read(parent_id, control)`: the GetJob itself (with its patient retries, stopped by `control`)."""
        self._read = read
        self._lock = threading.Lock()
        self._parents: dict[str, _Parent] = {}
        self._started = 0  # reads put on the wire so far

    def get(self, parent_id: str, control: Control) -> Any:
        seen = None  # reads numbered above this one began after the page asked
        while True:
            with self._lock:
                if seen is None:
                    seen = self._started
                parent = self._parents.setdefault(parent_id, _Parent())
                wire = parent.on_the_wire
                if parent.next is not None:
                    mine, leads, after = parent.next, False, None
                elif wire is not None and wire.number > seen:  # (asking again after a leader was stopped)
                    mine, leads, after = wire, False, None
                elif wire is None:
                    mine = parent.on_the_wire = self._on_the_wire(_Read())
                    leads, after = True, None
                else:
                    mine = parent.next = _Read()
                    leads, after = True, wire
            if not leads:
                self._wait(mine, control)
                if isinstance(mine.error, FetchAborted):
                    continue  # the page that led it was stopped, not this one: read again
                if mine.error is not None:
                    raise mine.error
                return mine.result
            if after is not None:
                self._wait(after, control, leading=mine, parent_id=parent_id)
                with self._lock:
                    parent.on_the_wire, parent.next = self._on_the_wire(mine), None
            return self._lead(parent_id, parent, mine, control)

    def _on_the_wire(self, read: _Read) -> _Read:
        # (called with the lock held)
        self._started += 1
        read.number = self._started
        return read

    def _lead(self, parent_id: str, parent: _Parent, read: _Read, control: Control) -> Any:
        try:
            read.result = self._read(parent_id, control)
            return read.result
        except BaseException as error:
            read.error = error
            raise
        finally:
            with self._lock:
                if parent.on_the_wire is read:
                    parent.on_the_wire = None
                if parent.on_the_wire is None and parent.next is None:
                    self._parents.pop(parent_id, None)
            read.done.set()

    def _wait(self, read: _Read, control: Control, leading: _Read | None = None, parent_id: str = "") -> None:
        """Until `read` is done; a page stopped meanwhile raises FetchAborted (handing the read it was to
        lead, if any, to a page that joined it)."""
        while not read.done.wait(FOLLOWER_CHECK_SECONDS):
            try:
                control.check()
            except FetchAborted as error:
                if leading is not None:
                    self._abandon(parent_id, leading, error)
                raise

    def _abandon(self, parent_id: str, read: _Read, error: FetchAborted) -> None:
        # The pages that joined the read this page was to lead will read again themselves.
        with self._lock:
            parent = self._parents.get(parent_id)
            if parent is not None and parent.next is read:
                parent.next = None
                if parent.on_the_wire is None:
                    self._parents.pop(parent_id, None)
        read.error = error
        read.done.set()
