"""Capacity trends: each metric's forecast as an item, read from the samples ``capacity-collect`` and
``opsflow capacity import`` stored.

The forecast itself is :mod:`tasks.capacity.forecast` (pure). Here: reading the window's samples
(``read[capacity-samples]``), forecasting in task runs (``forecast[METRIC]``, or at most
:data:`FORECAST_TASK_RUNS` batches past that many metrics), the checks (``forecast``,
``growth_change``, and ``drift`` when the crossing date moved earlier since the previous run), and one
chart per metric (``charts[N metrics]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import CapacityMetric
from opsflow.files import write_atomically
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from tasks.retry import IO_RETRIES
from tasks.routine import failing_checks, finding_state

#: Up to this many metrics each get a task run of their own; more are forecast in this many batches.
FORECAST_TASK_RUNS = 20
DAY_SECONDS = 86400.0

Series = tuple[Sequence[datetime], Sequence[float]]
#: Draws one metric's chart: (forecast, unit, now) -> SVG text.
ChartRenderer = Callable[[Any, str, datetime], str]


@dataclass(frozen=True)
class Forecasted:
    """A batch's items, and each metric's forecast (for its chart)."""

    items: list[Item]
    forecasts: dict[str, Any]


def batches(metrics: Sequence[CapacityMetric]) -> list[list[CapacityMetric]]:
    """The metrics split into at most :data:`FORECAST_TASK_RUNS` batches, in config order."""
    size = max(1, -(-len(metrics) // FORECAST_TASK_RUNS))
    return [list(metrics[i : i + size]) for i in range(0, len(metrics), size)]


def batch_label(batch: Sequence[CapacityMetric]) -> str:
    """A batch's task run name: the metric, or the first and last with the count."""
    return batch[0].metric if len(batch) == 1 else f"{batch[0].metric}…{batch[-1].metric} ({len(batch)})"


def previous_crossings(previous: RoutineResult | None) -> dict[str, date]:
    """Each metric's crossing date in the previous run's result (for the ``drift`` check)."""
    found: dict[str, date] = {}
    for item in previous.items if previous is not None else []:
        crossing = item.metrics.get("crossing_date")
        if isinstance(crossing, str):
            try:
                found[item.name] = date.fromisoformat(crossing)
            except ValueError:
                continue
    return found


def _number(value: float | None, digits: int = 1) -> float | None:
    """A JSON-safe rounded number: None for None, NaN and infinities."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def forecast_metrics(forecast: Any, unit: str) -> dict[str, Any]:
    """The item's metrics (SPEC §5 capacity-trends, then opsflow's own)."""
    return {
        "current": _number(forecast.current, 4),
        "threshold": forecast.threshold,
        "unit": unit,
        "slope_per_day": _number(forecast.slope_per_day, 6),
        "days_to_threshold": _number(forecast.days_to_threshold),
        "crossing_date": forecast.crossing_date.isoformat() if forecast.crossing_date else None,
        "days_to_threshold_low": _number(forecast.days_to_threshold_low),
        "days_to_threshold_high": _number(forecast.days_to_threshold_high),
        "samples": forecast.samples,
        "history_days": _number(forecast.history_days),
        "last_shift": forecast.last_shift.isoformat() if forecast.last_shift else None,
        "band_coverage": _number(forecast.band_coverage, 3),
        "backtest_error_pct": _number(forecast.backtest_error_pct),
        "recent_slope_per_day": _number(forecast.recent_slope_per_day, 6),
        "sawtooth": forecast.sawtooth,
        "days_if_cleanups_stop": _number(forecast.days_if_cleanups_stop),
    }


def forecast_item(metric: CapacityMetric, series: Series, now: datetime, previous: date | None) -> tuple[Item, Any]:
    """One metric's forecast and its item: checks ``forecast``, ``growth_change`` and maybe ``drift``."""
    from tasks.capacity.forecast import drift_check, forecast, forecast_check, growth_change_check

    times, values = series
    result = forecast(
        metric.metric,
        times,
        values,
        threshold=metric.threshold.value,
        as_of=now,
        window_days=metric.window / DAY_SECONDS,
    )
    warn_days, fail_days = metric.warn_within / DAY_SECONDS, metric.fail_within / DAY_SECONDS
    status, detail = forecast_check(result, warn_days, fail_days)
    checks = [Check(check="forecast", status=status, detail=detail)]
    status, detail = growth_change_check(result)
    checks.append(Check(check="growth_change", status=status, detail=detail))
    drift = drift_check(result, previous, warn_days)
    if drift is not None:
        checks.append(Check(check="drift", status=drift[0], detail=drift[1]))
    item = Item(name=metric.metric, checks=checks, metrics=forecast_metrics(result, metric.threshold.unit))
    return item, result


def forecast_batch(
    batch: Sequence[CapacityMetric], series: Mapping[str, Series], now: datetime, previous: Mapping[str, date]
) -> Forecasted:
    items, forecasts = [], {}
    for metric in batch:
        item, result = forecast_item(metric, series.get(metric.metric, ([], [])), now, previous.get(metric.metric))
        items.append(item)
        forecasts[metric.metric] = result
    return Forecasted(items=items, forecasts=forecasts)


def write_charts(
    forecasts: Mapping[str, Any], metrics: Sequence[CapacityMetric], out_dir: Path, now: datetime, render: ChartRenderer
) -> dict[str, str]:
    """One SVG per metric under ``out_dir`` (``capacity-METRIC-DATE.svg``), drawn by ``render`` (the flow
    hands in ``reports.capacity.chart_svg``: a task does not import reports); returns the paths by metric."""
    units = {metric.metric: metric.threshold.unit for metric in metrics}
    written = {}
    for name, result in forecasts.items():
        path = out_dir / f"capacity-{name}-{now.date().isoformat()}.svg"
        written[name] = str(write_atomically(path, render(result, units.get(name, "number"), now)))
    return written


def window_start(metrics: Sequence[CapacityMetric], now: datetime) -> datetime:
    """The start of the longest analysis window of ``metrics``."""
    longest = max((metric.window for metric in metrics), default=90 * DAY_SECONDS)
    return now - timedelta(seconds=longest)


# -- tasks ------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="read[capacity-samples]")
def read_series_task(store: OpsStore, metrics: Sequence[str], start: datetime, end: datetime) -> dict[str, Series]:
    return store.capacity_series(metrics, start, end)  # type: ignore[return-value]


@task(cache_policy=NO_CACHE, task_run_name="forecast[{label}]")
def forecast_task(
    batch: Sequence[CapacityMetric],
    series: Mapping[str, Series],
    now: datetime,
    previous: Mapping[str, date],
    label: str,
) -> Forecasted | State[Forecasted]:
    """Forecast a batch; Failed naming the metrics that run out within ``fail_within``. No retries: pure
    computation on data already read, a retry would compute the same."""
    forecasted = forecast_batch(batch, series, now, previous)
    return finding_state(forecasted, [f"{item.name}: {p}" for item in forecasted.items for p in failing_checks(item)])


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="charts[{count} metrics]")
def write_charts_task(
    forecasts: Mapping[str, Any],
    metrics: Sequence[CapacityMetric],
    out_dir: str,
    now: datetime,
    count: int,
    render: ChartRenderer,
) -> dict[str, str]:
    return write_charts(forecasts, metrics, Path(out_dir), now, render)
