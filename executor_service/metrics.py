"""The executor's own metrics (quaero.metrics serves them with the RPC metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PAGES = Counter("quaero_pages", "Pages finished, by verdict (OK for a stored page; otherwise the error_reason) and "
                "status", ["verdict", "status"])
FETCH_SECONDS = Histogram("quaero_fetch_seconds", "Time to fetch a page, all redirect hops, by outcome",
                          ["outcome"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
PAGES_IN_FLIGHT = Gauge("quaero_pages_in_flight", "Pages this executor holds leases on")
MANAGER_REACHABLE = Gauge("quaero_manager_reachable", "1 while the manager answers this executor, else 0")
BROWSERS_STARTED = Counter("quaero_browsers_started", "Headless browsers started for render = \"js\" pages")
BROWSERS_KILLED = Counter("quaero_browsers_killed", "Headless browsers killed because they stopped answering")
