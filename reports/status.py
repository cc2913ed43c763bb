"""The at-a-glance status page rendered (issue 18): one self-contained HTML document from a
:class:`opsflow.status.StatusSnapshot` — every routine's latest status, open incidents, next expiries and
capacity runway.

Pure rendering: no store, no clock (ages are counted from the snapshot's ``generated_at``); the only file
read is this package's own template. Inline CSS, no script, nothing fetched from anywhere; it reloads itself
every ``refresh_seconds`` (a meta refresh). Autoescaped: item names and details come from services and
configs, so ``<script>`` shows as text. Links go only to ``http(s)`` addresses (the Prefect UI).

>>> format_age(0), format_age(59), format_age(3600 * 26 + 120), format_age(86400 * 3)
('0s', '59s', '1d 2h', '3d')
>>> format_days(2.5), format_days(None), format_days(-1)
('2.5 d', '—', 'crossed')
"""

from __future__ import annotations

import functools
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from opsflow.results import RoutineResult
from opsflow.status import StatusSnapshot
from opsflow.units import format_quantity
from reports._jinja import jinja_environment

_BADGE_WORDS = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "error": "ERROR"}


@functools.cache
def _template() -> Any:
    """The page's template, compiled once per process (every routine run refreshes the page, the minute
    probe's included: compiling it each time cost more than gathering and writing the page)."""
    environment = jinja_environment(
        badge=badge,
        days=format_days,
        left=format_days_left,
        quantity=_quantity,
        failing=failing_items,
        link=safe_link,
    )
    return environment.get_template("status.html.j2")


def render_status_page(snapshot: StatusSnapshot) -> str:
    """The status page as one HTML document (see the module's docstring)."""
    zone = ZoneInfo(snapshot.timezone)
    now = snapshot.generated_at

    def when(moment: datetime | None) -> str:
        return "—" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    def age(moment: datetime) -> str:
        return format_age((now - moment).total_seconds())

    counts = {status: 0 for status in (*_BADGE_WORDS, "none")}
    for routine in snapshot.routines:
        counts[routine.result.status if routine.result is not None else "none"] += 1
    return str(
        _template().render(
            s=snapshot,
            counts=counts,
            soon=[e for e in snapshot.expiries if e.days_left is not None and e.days_left <= snapshot.warn_within_days],
            when=when,
            age=age,
        )
    )


def badge(status: str | None) -> Markup:
    """A coloured badge with a word (OK / WARN / FAIL / ERROR; NO RUN for None)."""
    key = status if status in _BADGE_WORDS else "none"
    word = _BADGE_WORDS.get(key, "NO RUN" if status is None else str(status).upper())
    return Markup('<span class="badge badge-{}">{}</span>').format(key, word)


def failing_items(result: RoutineResult) -> list[tuple[str, str, list[str]]]:
    """``(item, status, ["check: detail", ...])`` of each item of ``result`` that is not ok, worst first."""
    order = {"error": 0, "fail": 1, "warn": 2}
    found = [
        (
            item.name,
            item.status,
            [f"{c.check}: {c.detail}" if c.detail else c.check for c in item.checks if c.status != "ok"],
        )
        for item in result.items
        if item.status != "ok"
    ]
    return sorted(found, key=lambda entry: order.get(entry[1], 3))


def safe_link(url: str | None) -> str | None:
    """``url`` when it is an ``http(s)`` address, else None (no ``javascript:`` link on the page)."""
    if url and url.lower().startswith(("http://", "https://")):
        return url
    return None


def format_age(seconds: float) -> str:
    """A duration for people: ``45s``, ``12m``, ``3h 5m``, ``2d 4h`` (two units at most)."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def format_days(days: float | None) -> str:
    """Days as shown: one decimal at most; ``crossed`` when negative; ``—`` when unknown."""
    if days is None or (isinstance(days, float) and math.isnan(days)):
        return "—"
    if days < 0:
        return "crossed"
    return f"{days:.1f}".removesuffix(".0") + " d"


def format_days_left(days: float | None) -> str:
    """An expiry's days left: ``12 d``, ``today``, ``expired 3 d ago``, ``—`` when unknown.

    >>> format_days_left(12), format_days_left(0), format_days_left(-3), format_days_left(None)
    ('12 d', 'today', 'expired 3 d ago', '—')
    """
    if days is None:
        return "—"
    if days < 0:
        return f"expired {format_days(-days)} ago"
    return "today" if days == 0 else format_days(days)


def _quantity(value: Any, unit: str) -> str:
    return "—" if value is None else format_quantity(float(value), unit)
