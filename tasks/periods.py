"""Report periods for the SLA report, in the config's timezone (pure: no I/O).

``day``, ``week`` (ISO week, Monday start), ``month``: the last complete one
before ``now``; ``YYYY-MM``: that month; ``FROM..TO``: ISO 8601 instants or
dates, ``TO`` exclusive (a date means its local midnight). Boundaries are local
midnights converted to UTC, so a day in Europe/Berlin lasts 23 or 25 hours
across a DST change.

>>> p = parse_period("2026-10", datetime(2026, 11, 5, tzinfo=UTC), ZoneInfo("Europe/Berlin"))
>>> p.label, p.seconds
('2026-10', 2682000.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

__all__ = ["Period", "PeriodError", "ZoneInfo", "parse_period", "previous_period"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: The years a period may lie in (SPEC §7: a time outside them is bad input).
MIN_YEAR, MAX_YEAR = 1970, 2200


class PeriodError(ValueError):
    """A ``--period`` that cannot be understood (usage error)."""


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC; ``kind`` is day, week, month or range; ``label`` names it."""

    kind: str
    label: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _month_start(year: int, month: int) -> date:
    return date(year, month, 1)


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def day_period(day: date, zone: tzinfo) -> Period:
    return Period("day", day.isoformat(), _midnight(day, zone), _midnight(day + timedelta(days=1), zone))


def week_period(monday: date, zone: tzinfo) -> Period:
    year, week, _ = monday.isocalendar()
    return Period("week", f"{year}-W{week:02d}", _midnight(monday, zone), _midnight(monday + timedelta(days=7), zone))


def month_period(first: date, zone: tzinfo) -> Period:
    return Period("month", f"{first:%Y-%m}", _midnight(first, zone), _midnight(_next_month(first), zone))


def _check_year(year: int, text: str) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PeriodError(f"{text!r}: year {year} is outside {MIN_YEAR}\u2013{MAX_YEAR}")


def _instant(text: str, zone: tzinfo) -> datetime:
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise PeriodError(f"no such date: {text!r}") from None
        _check_year(day.year, text)
        return _midnight(day, zone)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"not an ISO 8601 instant or date: {text!r}") from None
    _check_year(moment.year, text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def parse_period(text: str, now: datetime, zone: tzinfo) -> Period:
    """The period ``text`` names; named periods are the last complete one before ``now``."""
    text = text.strip()
    local_today = now.astimezone(zone).date()
    if text == "day":
        return day_period(local_today - timedelta(days=1), zone)
    if text == "week":
        this_monday = local_today - timedelta(days=local_today.weekday())
        return week_period(this_monday - timedelta(days=7), zone)
    if text == "month":
        first = local_today.replace(day=1)
        previous = (first - timedelta(days=1)).replace(day=1)
        return month_period(previous, zone)
    match = _MONTH.match(text)
    if match:
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise PeriodError(f"no such month: {text!r}")
        _check_year(year, text)
        return month_period(_month_start(year, month), zone)
    if ".." in text:
        left, _, right = text.partition("..")
        start, end = _instant(left.strip(), zone), _instant(right.strip(), zone)
        if end <= start:
            raise PeriodError(f"period {text!r}: TO must be after FROM")
        return Period("range", f"{left.strip()}..{right.strip()}", start, end)
    raise PeriodError(f"unknown period {text!r}: use day, week, month, YYYY-MM or FROM..TO")


def previous_period(period: Period, zone: tzinfo) -> Period:
    """The period of the same kind just before (a range: the same length just before)."""
    if period.kind == "day":
        return day_period(period.start.astimezone(zone).date() - timedelta(days=1), zone)
    if period.kind == "week":
        return week_period(period.start.astimezone(zone).date() - timedelta(days=7), zone)
    if period.kind == "month":
        first = period.start.astimezone(zone).date()
        return month_period((first - timedelta(days=1)).replace(day=1), zone)
    length = period.end - period.start
    return Period("range", f"previous {period.label}", period.start - length, period.start)
