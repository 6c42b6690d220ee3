"""The manager's own metrics (quaero.metrics serves them with the RPC metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

LEASES_EXPIRED = Counter("quaero_leases_expired", "Leases that ran out (their executor stopped renewing), so the "
                         "job went back to pending")
WATCHERS = Gauge("quaero_watchers", "Open WatchJob streams")
PENDING_CHILDREN = Gauge("quaero_pending_children", "Child jobs waiting to be leased (read when scraped)")
SCHEDULE_TICKS = Counter("quaero_schedule_ticks", "Schedule ticks this manager acted on, by definition and outcome "
                         "(started, skipped, buffered, missed, paused)", ["definition", "outcome"])
SCHEDULE_NEXT_FIRE = Gauge("quaero_schedule_next_fire_timestamp_seconds", "When each definition's schedule fires "
                           "next (Unix time; jitter not included; absent while paused)", ["definition"])
