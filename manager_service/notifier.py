"""Wakes WatchJob streams when a job changes in this process. Watchers also re-read on a short
timeout, so changes written by another manager process still reach them, a little later."""
from __future__ import annotations

import threading


class ChangeNotifier:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self.watchers = 0  # no watcher, no wake-up: writes skip the lock entirely

    def notify(self) -> None:
        if not self.watchers:
            return
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def watch(self) -> None:
        with self._condition:
            self.watchers += 1

    def unwatch(self) -> None:
        with self._condition:
            self.watchers -= 1

    def generation(self) -> int:
        with self._condition:
            return self._generation

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Blocks until something changed after generation `seen` or timeout; returns the generation."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout)
            return self._generation
