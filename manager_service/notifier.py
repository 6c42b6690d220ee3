"""What the stores say after each commit: the ids of the jobs a write changed. Whoever subscribed (the
watch hub) hears them; with nobody listening a notice costs one empty loop."""
from __future__ import annotations

from collections.abc import Callable, Iterable

Listener = Callable[[Iterable[str]], None]


class ChangeNotifier:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def notify(self, *job_ids: str | None) -> None:
        """After a commit: these jobs changed (None entries, e.g. a top-level job's parent, are skipped)."""
        for listener in self._listeners:
            listener([job_id for job_id in job_ids if job_id])
