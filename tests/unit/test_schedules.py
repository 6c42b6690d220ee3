"""Schedules as pure logic: cron forms, time zones across daylight saving changes, jitter, durations and the
errors a person gets for a schedule that cannot mean anything."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quaero.errors import InvalidArgument
from quaero.schedules import Overlap, Schedule, parse_duration


def ticks(cron: str, start: datetime, end: datetime, timezone: str = "UTC") -> list[str]:
    schedule = Schedule.from_mapping({"cron": cron, "timezone": timezone})
    return [tick.strftime("%m-%d %H:%M:%S") for tick in schedule.ticks(start, end)]


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_five_fields_six_with_seconds_and_names() -> None:
    assert ticks("*/20 * * * *", at(2026, 5, 1, 10, 0), at(2026, 5, 1, 11, 0)) == [
        "05-01 10:20:00", "05-01 10:40:00", "05-01 11:00:00"]
    assert ticks("*/15 * * * * *", at(2026, 5, 1, 10, 0), at(2026, 5, 1, 10, 0, 45)) == [
        "05-01 10:00:15", "05-01 10:00:30", "05-01 10:00:45"]
    assert ticks("@hourly", at(2026, 5, 1, 10, 0), at(2026, 5, 1, 12, 0)) == ["05-01 11:00:00", "05-01 12:00:00"]
    assert ticks("@daily", at(2026, 5, 1, 10, 0), at(2026, 5, 3, 0, 0)) == ["05-02 00:00:00", "05-03 00:00:00"]


def test_a_fixed_time_fires_once_a_day_across_both_daylight_saving_changes() -> None:
    # Berlin, 02:30 every day. 29 March: 02:00 -> 03:00, so 02:30 does not exist: it fires at 03:00 (01:00 UTC).
    assert ticks("30 2 * * *", at(2026, 3, 27, 12), at(2026, 3, 31, 12), "Europe/Berlin") == [
        "03-28 01:30:00", "03-29 01:00:00", "03-30 00:30:00", "03-31 00:30:00"]
    # 25 October: 03:00 -> 02:00, so 02:30 happens twice: it fires once (the first).
    assert ticks("30 2 * * *", at(2026, 10, 23, 12), at(2026, 10, 27, 12), "Europe/Berlin") == [
        "10-24 00:30:00", "10-25 00:30:00", "10-26 01:30:00", "10-27 01:30:00"]


def test_an_every_hour_schedule_fires_in_both_repeated_hours_and_none_in_the_missing_one() -> None:
    assert ticks("0 * * * *", at(2026, 10, 24, 23, 30), at(2026, 10, 25, 2, 30), "Europe/Berlin") == [
        "10-25 00:00:00", "10-25 01:00:00", "10-25 02:00:00"]  # 02:00 CEST, 02:00 CET, 03:00 CET
    assert ticks("0 * * * *", at(2026, 3, 28, 23, 30), at(2026, 3, 29, 2, 30), "Europe/Berlin") == [
        "03-29 00:00:00", "03-29 01:00:00", "03-29 02:00:00"]  # 01:00 CET, 03:00 CEST, 04:00 CEST


def test_jitter_is_bounded_and_the_same_for_a_tick_on_every_manager() -> None:
    schedule = Schedule.from_mapping({"cron": "* * * * *", "jitter": "30s"})
    delays = [schedule.jitter_for("wiki", at(2026, 5, 1, 10, minute)) for minute in range(60)]
    assert all(timedelta(0) <= delay < timedelta(seconds=30) for delay in delays)
    assert len(set(delays)) > 30  # spread
    assert delays == [schedule.jitter_for("wiki", at(2026, 5, 1, 10, minute)) for minute in range(60)]
    assert Schedule.from_mapping({"cron": "* * * * *"}).jitter_for("wiki", at(2026, 5, 1)) == timedelta(0)


def test_defaults_durations_and_the_mapping_round_trip() -> None:
    schedule = Schedule.from_mapping({"cron": "0 2 * * *"})
    assert (schedule.timezone, schedule.overlap, schedule.catchup_seconds, schedule.paused) == (
        "UTC", Overlap.SKIP, 3600.0, False)
    assert [parse_duration(text, "x") for text in ("90s", "10m", "2h", "1d", 45, "1.5m")] == [
        90, 600, 7200, 86400, 45, 90]
    full = Schedule.from_mapping({"cron": "0 2 * * 1-5", "timezone": "America/New_York", "jitter": "5m",
                                  "overlap": "buffer_one", "catchup_window": "2h", "paused": True})
    assert Schedule.from_mapping(full.to_mapping()) == full
    assert full.next_fires(at(2026, 5, 1, 12), 2) == [at(2026, 5, 4, 6), at(2026, 5, 5, 6)]  # (Friday noon UTC)


@pytest.mark.parametrize("data, words", [
    ({"cron": "0 2 * *"}, "5 fields"), ({"cron": "61 * * * *"}, "not a cron"), ({"cron": ""}, "not a cron"),
    ({"cron": "@sometimes"}, "@hourly"), ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "IANA"),
    ({"cron": "0 2 * * *", "jitter": "soon"}, "duration"), ({"cron": "0 2 * * *", "jitter": "2d"}, "at most 1 day"),
    ({"cron": "0 2 * * *", "overlap": "allow_all"}, "skip, buffer_one or cancel_previous"),
    ({"cron": "0 2 * * *", "catchup_window": -5}, "negative"), ({"cron": "0 2 * * *", "paused": "yes"}, "true or false"),
])
def test_a_schedule_that_cannot_mean_anything_is_refused_with_the_field_and_what_to_write(
        data: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Schedule.from_mapping(data)
    assert words in refused.value.message
    assert refused.value.field.startswith("schedule.")
