"""Pages of one run that ask for their parent at the same time share a read, and none gets a read that
began before it asked."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from executor_service.crawl.control import Control, FetchAborted
from executor_service.parent_reads import ParentReads


class Parent:
    """A parent read that counts its calls; each call waits until the test lets it finish."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Semaphore(0)
        self.finish = threading.Semaphore(0)
        self.fail_with: list[BaseException] = []
        self.lock = threading.Lock()

    def read(self, parent_id: str, control: Control) -> Any:
        with self.lock:
            self.calls += 1
            number = self.calls
        self.started.release()
        assert self.finish.acquire(timeout=5)
        if self.fail_with:
            raise self.fail_with.pop(0)
        return (parent_id, number)


class Waiting(Control):
    """A page's control that tells when the page is waiting for a read (it checks its cancellation)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def check(self) -> None:
        self.waiting.set()
        super().check()


def all_waiting(controls: list[Waiting]) -> None:
    for control in controls:
        assert control.waiting.wait(5)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_pages_asking_during_a_read_share_the_next_one() -> None:
    parent = Parent()
    reads = ParentReads(parent.read)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(reads.get, "p", Control())
        assert parent.started.acquire(timeout=5)  # read 1 is on the wire
        controls = [Waiting() for _ in range(6)]
        others = [pool.submit(reads.get, "p", control) for control in controls]
        all_waiting(controls)
        assert parent.calls == 1  # they wait for the next read, which starts when read 1 ends
        parent.finish.release()
        assert first.result(5) == ("p", 1)
        assert parent.started.acquire(timeout=5)
        parent.finish.release()
        assert {future.result(5) for future in others} == {("p", 2)}  # read after they asked, all six
    assert parent.calls == 2
    assert not reads._parents  # nothing left behind


def test_parents_do_not_share_reads() -> None:
    parent = Parent()
    reads = ParentReads(parent.read)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(reads.get, name, Control()) for name in ("a", "b")]
        for _ in futures:
            assert parent.started.acquire(timeout=5)
        parent.finish.release()
        parent.finish.release()
        assert sorted(future.result(5)[0] for future in futures) == ["a", "b"]


def test_a_stopped_leader_does_not_fail_the_pages_that_joined_its_read() -> None:
    parent = Parent()
    reads = ParentReads(parent.read)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(reads.get, "p", Control())
        assert parent.started.acquire(timeout=5)
        controls = [Waiting() for _ in range(3)]
        pages = [pool.submit(reads.get, "p", control) for control in controls]  # one leads read 2, two join it
        all_waiting(controls)
        parent.finish.release()
        assert first.result(5) == ("p", 1)
        assert parent.started.acquire(timeout=5)
        for control in controls:
            control.waiting.clear()
        parent.fail_with.append(FetchAborted("the leading page was cancelled"))
        parent.finish.release()  # read 2 is stopped with its leader's page
        assert parent.started.acquire(timeout=5)  # the two that joined it read again: one leads read 3 ...
        # ... and the other joins it (a page slow to wake must join before read 3 ends, or it reads alone)
        wait_for(lambda: sum(control.waiting.is_set() for control in controls) == 1)
        parent.finish.release()
        outcomes = [future.exception(5) or future.result(5) for future in pages]
    assert sorted(map(str, outcomes)) == sorted(["('p', 3)", "('p', 3)", "the leading page was cancelled"])
    assert parent.calls == 3


def test_an_error_of_the_read_reaches_every_page_that_shared_it() -> None:
    parent = Parent()
    reads = ParentReads(parent.read)
    parent.fail_with.append(LookupError("parent not found"))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(reads.get, "p", Control())
        assert parent.started.acquire(timeout=5)
        parent.finish.release()
        with pytest.raises(LookupError):
            first.result(5)
    assert not reads._parents


def test_a_page_cancelled_while_waiting_leaves_at_once_and_the_others_go_on() -> None:
    parent = Parent()
    reads = ParentReads(parent.read)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(reads.get, "p", Control())
        assert parent.started.acquire(timeout=5)
        cancelled, other = Waiting(), Waiting()
        leaving = pool.submit(reads.get, "p", cancelled)  # it leads the next read, waiting for read 1
        all_waiting([cancelled])
        staying = pool.submit(reads.get, "p", other)  # joins that next read
        all_waiting([other])
        cancelled.cancel("run cancelled")
        with pytest.raises(FetchAborted):
            leaving.result(2)
        parent.finish.release()
        assert first.result(5) == ("p", 1)
        assert parent.started.acquire(timeout=5)  # the page that stayed reads again itself
        parent.finish.release()
        assert staying.result(5) == ("p", 2)
    wait_for(lambda: not reads._parents)
