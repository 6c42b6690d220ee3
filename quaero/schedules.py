"""A job definition's schedule: when its runs start by themselves (pure logic: the manager's scheduler fires
the ticks, the CLI and the API check and show them).

    schedule = "0 2 * * *"        5-field cron (minute hour day month weekday), 6 fields with seconds
                                  first, or @hourly, @daily, @weekly, @monthly, @yearly
    timezone = "Europe/Berlin"    IANA name; default UTC
    jitter = "5m"                 each tick fires up to this much later (the same delay every time for a
                                  given tick: spread, not random on every look)
    overlap = "skip"              a tick while a run is still going: skip | buffer_one | cancel_previous
    catchup_window = "1h"         ticks missed while no manager ran fire when one is back, if no older
                                  than this; older ones are skipped (and logged)
    paused = false

Daylight saving time: a wall-clock time that does not exist (the spring gap) fires at the first time after
it; one that happens twice (the autumn repeat) fires once when the hour is fixed, and twice when the
schedule runs every hour anyway (hour field '*'), as cron does.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import InvalidArgument, Reason

NAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
         "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
DEFAULT_CATCHUP_SECONDS = 3600.0
MAX_JITTER_SECONDS = 86400.0
MAX_CATCHUP_SECONDS = 366 * 86400.0
MAX_TICKS_PER_LOOK = 100_000  # ticks walked at once (a per-second schedule down for a day: 86,400)


class Overlap(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    CANCEL_PREVIOUS = "cancel_previous"


def parse_duration(value: Any, field: str) -> float:
    """Seconds from a number of seconds or a text such as "90s", "10m", "2h", "1d"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION.match(value)):
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    else:
        raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{field} must be a duration such as 30s, 10m, 2h or 1d "
                              f"(or a number of seconds), not {str(value)[:40]!r}", field)
    if seconds < 0:
        raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{field} cannot be negative", field)
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    jitter_seconds: float = 0.0
    overlap: Overlap = Overlap.SKIP
    catchup_seconds: float = DEFAULT_CATCHUP_SECONDS
    paused: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "schedule") -> Schedule:
        cron = str(data.get("cron") or "").strip()
        expression = NAMES.get(cron.lower(), cron)
        fields = expression.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=len(fields) == 6):
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.cron {cron[:80]!r} is not a cron expression: "
                                  "give 5 fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), 6 "
                                  "with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly", f"{prefix}.cron")
        timezone = str(data.get("timezone") or "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.timezone {timezone[:60]!r} is not an IANA time "
                                  "zone (such as UTC or Europe/Berlin)", f"{prefix}.timezone") from None
        jitter = parse_duration(data.get("jitter") or 0, f"{prefix}.jitter")
        if jitter > MAX_JITTER_SECONDS:
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.jitter is at most 1 day", f"{prefix}.jitter")
        catchup = data.get("catchup_window")
        catchup_seconds = DEFAULT_CATCHUP_SECONDS if catchup in (None, "") else parse_duration(
            catchup, f"{prefix}.catchup_window")
        if catchup_seconds > MAX_CATCHUP_SECONDS:
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.catchup_window is at most 366 days",
                                  f"{prefix}.catchup_window")
        overlap = str(data.get("overlap") or Overlap.SKIP)
        if overlap not in tuple(Overlap):
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.overlap must be skip, buffer_one or "
                                  f"cancel_previous, not {overlap[:40]!r}", f"{prefix}.overlap")
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            raise InvalidArgument(Reason.INVALID_SCHEDULE, f"{prefix}.paused must be true or false", f"{prefix}.paused")
        return cls(cron, timezone, jitter, Overlap(overlap), catchup_seconds, paused)

    def to_mapping(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone, "jitter": format_duration(self.jitter_seconds),
                "overlap": str(self.overlap), "catchup_window": format_duration(self.catchup_seconds),
                "paused": self.paused}

    # ---- ticks --------------------------------------------------------------------------------------
    @property
    def _expression(self) -> str:
        return NAMES.get(self.cron.lower(), self.cron)

    def _fixed_hour(self) -> bool:
        fields = self._expression.split()
        hour = fields[2] if len(fields) == 6 else fields[1]
        return hour != "*" and "/" not in hour

    def ticks(self, after: datetime, until: datetime, limit: int = MAX_TICKS_PER_LOOK) -> Iterator[datetime]:
        """The ticks in (after, until], in UTC, oldest first (at most `limit`)."""
        zone = ZoneInfo(self.timezone)
        expression = self._expression
        walker = croniter(expression, after.astimezone(zone), second_at_beginning=len(expression.split()) == 6)
        fixed_hour = self._fixed_hour()
        for _ in range(limit):
            tick: datetime = walker.get_next(datetime)
            if tick.astimezone(UTC) > until:
                return
            if fixed_hour and _second_of_repeated_hour(tick):
                continue  # (autumn: the repeated wall-clock time already fired)
            yield tick.astimezone(UTC)

    def last_tick_before(self, moment: datetime) -> datetime:
        expression = self._expression
        walker = croniter(expression, moment.astimezone(ZoneInfo(self.timezone)),
                          second_at_beginning=len(expression.split()) == 6)
        tick: datetime = walker.get_prev(datetime)
        return tick.astimezone(UTC)

    def next_fires(self, after: datetime, count: int = 3) -> list[datetime]:
        """The next `count` fire times (jitter not included)."""
        out: list[datetime] = []
        for tick in self.ticks(after, after + timedelta(days=3660)):
            out.append(tick)
            if len(out) >= count:
                break
        return out

    def jitter_for(self, definition_id: str, tick: datetime) -> timedelta:
        """The same delay for a tick whichever manager looks: spread by a hash of the definition and tick."""
        if not self.jitter_seconds:
            return timedelta(0)
        digest = hashlib.sha256(f"{definition_id}|{tick.isoformat()}".encode()).digest()
        return timedelta(seconds=int.from_bytes(digest[:8], "big") / 2**64 * self.jitter_seconds)


def _second_of_repeated_hour(tick: datetime) -> bool:
    """The later of two instants with the same wall-clock time (the hour clocks go back)."""
    zone = tick.tzinfo
    wall = tick.replace(tzinfo=None)
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return False
    return tick.utcoffset() == second.utcoffset()
