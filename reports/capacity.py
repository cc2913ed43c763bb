"""Capacity trends for people: the markdown report ranked by runway (artifact ``capacity-trends``) and one
SVG chart per metric (history, fit, band, threshold, crossing date) for artifacts and the monthly report.

Pure rendering: given a result or a forecast, it returns text; the flow writes files and publishes.
matplotlib is imported inside :func:`chart_svg` only (it is slow to import and needs no display).

>>> from datetime import UTC, datetime
>>> from opsflow.results import Check
>>> soon = Item(
...     name="root-disk",
...     checks=[Check(check="forecast", status="fail", detail="crosses 80% on 2026-12-09")],
...     metrics={"current": 78.0, "threshold": 80.0, "unit": "percent", "days_to_threshold": 4.0,
...              "crossing_date": "2026-12-09", "days_to_threshold_low": 3.0, "days_to_threshold_high": 6.0},
... )
>>> flat = Item(name="api-cpu", checks=[Check(check="forecast", status="ok", detail="no crossing")],
...             metrics={"current": 0.31, "threshold": 0.8, "unit": "number", "days_to_threshold": None})
>>> result = RoutineResult(routine="capacity-trends", as_of=datetime(2026, 12, 5, 7, tzinfo=UTC), items=[flat, soon])
>>> print(capacity_markdown(result), end="")  # doctest: +ELLIPSIS
# Capacity trends: FAIL
<BLANKLINE>
As of 2026-12-05T07:00:00Z; ranked by days to threshold (the band's early edge decides the status).
<BLANKLINE>
| metric | status | now | threshold | runway | crossing | band | detail |
|---|---|---|---|---|---|---|---|
| root-disk | ❌ fail | 78% | 80% | 4d | 2026-12-09 | 3d – 6d | crosses 80% on 2026-12-09 |
| api-cpu | ✅ ok | 0.31 | 0.8 | never (within a year) | — | — | no crossing |
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timedelta
from typing import Any

from opsflow.redact import redact
from opsflow.results import Item, RoutineResult, format_instant
from opsflow.units import format_quantity

_BADGE = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail", "error": "🛑 error"}
NEVER = "never (within a year)"


def _days(value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return NEVER
    return f"{value:.0f}d" if value >= 1 or value == 0 else f"{value:.1f}d"


def _quantity(item: Item, key: str) -> str:
    value = item.metrics.get(key)
    if not isinstance(value, int | float):
        return "—"
    return format_quantity(float(value), str(item.metrics.get("unit", "number")))


def _band(item: Item) -> str:
    low, high = item.metrics.get("days_to_threshold_low"), item.metrics.get("days_to_threshold_high")
    if low is None and high is None:
        return "—"
    return f"{_days(low)} – {_days(high)}"


def _runway_key(item: Item) -> tuple[float, str]:
    days = item.metrics.get("days_to_threshold_low")
    if not isinstance(days, int | float):
        days = item.metrics.get("days_to_threshold")
    return (float(days) if isinstance(days, int | float) else math.inf, item.name)


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|").replace("\n", " ")


def capacity_markdown(result: RoutineResult) -> str:
    """The report: a headline, then one row per metric, soonest to run out first."""
    lines = [
        f"# Capacity trends: {result.status.upper()}",
        "",
        f"As of {format_instant(result.as_of)}; ranked by days to threshold "
        "(the band's early edge decides the status).",
        "",
        "| metric | status | now | threshold | runway | crossing | band | detail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in sorted(result.items, key=_runway_key):
        forecast = next((c for c in item.checks if c.check == "forecast"), None)
        details = [c.detail for c in item.checks if c.detail and (c is forecast or c.status != "ok")]
        runway = _days(item.metrics.get("days_to_threshold")) if "days_to_threshold" in item.metrics else "—"
        lines.append(
            f"| {_cell(item.name)} | {_BADGE[item.status]} | {_quantity(item, 'current')} | "
            f"{_quantity(item, 'threshold')} | {runway} | {item.metrics.get('crossing_date') or '—'} | "
            f"{_band(item)} | {_cell('; '.join(details))} |"
        )
    return "\n".join(lines) + "\n"


def chart_svg(forecast: Any, unit: str, now: datetime) -> str:
    """One metric's chart as SVG: its daily history, the fitted trend and its band up to the crossing (or
    a year), the threshold, and the crossing date marked. ``forecast`` is a
    :class:`tasks.capacity.forecast.Forecast`."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7.5, 3.2), dpi=96)
    try:
        _draw(axes, forecast, now)
        axes.set_title(f"{forecast.metric}: {_headline(forecast, unit)}", fontsize=10, loc="left")
        axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_quantity(v, unit)))
        figure.autofmt_xdate()
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})  # no timestamp: same input, same file
        return buffer.getvalue()
    finally:
        pyplot.close(figure)


def _headline(forecast: Any, unit: str) -> str:
    if forecast.insufficient:
        return "insufficient history"
    if forecast.crossing_date is None:
        return f"no crossing of {format_quantity(forecast.threshold, unit)} within a year"
    return f"reaches {format_quantity(forecast.threshold, unit)} around {forecast.crossing_date.isoformat()}"


def _draw(axes: Any, forecast: Any, now: datetime) -> None:
    """History, trend with band, threshold and crossing on ``axes``."""
    days = [datetime.combine(day, datetime.min.time()) for day, _ in forecast.daily]
    axes.plot(days, [value for _, value in forecast.daily], color="#4c72b0", linewidth=1.2, label="daily max")
    axes.axhline(forecast.threshold, color="#c44e52", linestyle="--", linewidth=1, label="threshold")
    today = now.replace(tzinfo=None)
    if forecast.fit is not None and not forecast.insufficient:
        intercept, slope = forecast.fit
        horizon = forecast.days_to_threshold_high or forecast.days_to_threshold or 0.0
        horizon = min(max(horizon * 1.1, 14.0), 365.0)
        ahead = [today + timedelta(days=step * horizon / 40) for step in range(41)]
        mid = [intercept + slope * step * horizon / 40 for step in range(41)]
        axes.plot(ahead, mid, color="#dd8452", linewidth=1.2, label="trend")
        low, high = forecast.days_to_threshold_low, forecast.days_to_threshold_high
        if low is not None and forecast.current is not None and low > 0:
            fast = (forecast.threshold - intercept) / low
            slow = (forecast.threshold - intercept) / high if high else 0.0
            upper = [intercept + fast * step * horizon / 40 for step in range(41)]
            lower = [intercept + slow * step * horizon / 40 for step in range(41)]
            axes.fill_between(ahead, lower, upper, color="#dd8452", alpha=0.15, label="band")
    if forecast.crossing_date is not None:
        axes.axvline(datetime.combine(forecast.crossing_date, datetime.min.time()), color="#c44e52", linewidth=0.8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
