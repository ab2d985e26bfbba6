"""Office hours: when people answer. Outside them nobody counts as online, whoever is signed in."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock(value: str) -> dt.time:
    """ "09:00" -> 09:00; "24:00" is the end of the day."""
    hours, sep, minutes = value.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{value!r} is not a time of day like 09:00")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return dt.time.max
    return dt.time(h, m)  # raises for 25:00 or 09:60


def open_at(moment: dt.datetime, timezone: str, days: list[str], start: str, end: str) -> bool:
    """Whether `moment` (aware) falls on one of `days` between `start` and `end` in `timezone`."""
    local = moment.astimezone(ZoneInfo(timezone))
    if DAYS[local.weekday()] not in days:
        return False
    return parse_clock(start) <= local.time() < parse_clock(end)
