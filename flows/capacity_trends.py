"""Capacity trends — weekly: when does each resource run out, with a band, robust to cleanups?

For every metric of ``opsflow.yaml`` (``capacity:``), from the samples in the ops store
(``capacity-collect``'s hourly ones and ``opsflow capacity import``'s history): the daily maximum
over the metric's window (default 90 days), level shifts (a cleanup, a migration) found on the
day-to-day differences and the trend fitted after the last one (Theil–Sen), a crossing date with a
low/high band calibrated by backtests on the metric's own history, the runway with cleanups and if
cleanups stop for a metric cleaned up on a cadence, and ``growth_change`` when recent growth leaves
the long-term interval. Check ``forecast``: ``fail`` when the band's early edge reaches the threshold
within ``fail_within`` (already over included), ``warn`` within ``warn_within`` or with fewer than 7
days of history after the last shift; ``drift`` warns when the crossing date moved earlier by more
than a quarter of ``warn_within`` since the previous run. One SVG chart per metric
(``reports.monthly.out_dir``, default ``$OPSFLOW_HOME/reports/out``) and a table ranked by runway.

Schedule: weekly, Monday 07:00 (``prefect.yaml``). Needs: the ops store.
Result: stored, alerted, and published under the artifact key ``capacity-trends``.

    opsflow run capacity-trends [--as-of 2026-11-30T07:00:00Z] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

import logging
from datetime import date
from typing import Any

from prefect.utilities.annotations import quote

from flows._routine import Routine, RoutineRun, Work, reason, routine_flow
from opsflow.files import output_dir
from opsflow.results import Check, Item, RoutineResult
from reports.capacity import capacity_markdown, chart_svg
from tasks.capacity.trends import (
    batch_label,
    batches,
    forecast_task,
    previous_crossings,
    read_series_task,
    window_start,
    write_charts_task,
)
from tasks.retry import with_retries
from tasks.routine import settle

ROUTINE_NAME = "capacity-trends"

log = logging.getLogger("opsflow.run")


def previous_result(run: RoutineRun) -> RoutineResult | None:
    """The latest stored forecast before this run's instant (what ``drift`` compares with)."""
    results = with_retries(lambda: run.store.results(ROUTINE_NAME, limit=10), "read the previous forecast")
    earlier = [result for result in results if result.as_of < run.now and result.items]
    return earlier[0] if earlier else None


def forecast_every_metric(run: RoutineRun) -> Work:
    """Read every metric's window, forecast in batches, chart each metric."""
    metrics = run.config.capacity
    if not metrics:
        return Work(items=[])
    series = read_series_task(run.store, [m.metric for m in metrics], window_start(metrics, run.now), run.now)
    previous: dict[str, date] = previous_crossings(previous_result(run))
    futures = []
    for batch in batches(metrics):
        own = {m.metric: series.get(m.metric, ([], [])) for m in batch}
        # quote(): the samples are data, not task inputs for Prefect to walk element by element.
        futures.append((batch, forecast_task.submit(batch, quote(own), run.now, previous, label=batch_label(batch))))
    items: list[Item] = []
    forecasts: dict[str, Any] = {}
    for batch, future in futures:
        forecasted, error = settle(future)
        if error is not None:
            why = f"could not be forecast: {reason(error)}"
            items += [Item(name=m.metric, checks=[Check(check="forecast", status="error", detail=why)]) for m in batch]
            continue
        items += forecasted.items
        forecasts.update(forecasted.forecasts)
    return Work(items=items, outputs=chart_outputs(run, forecasts, items))


def chart_outputs(run: RoutineRun, forecasts: dict[str, Any], items: list[Item]) -> dict[str, str]:
    """Write the charts; a chart that cannot be written is a warning, never a lost forecast."""
    if not forecasts:
        return {}
    monthly = run.config.reports.monthly
    out_dir = output_dir(monthly.out_dir if monthly else None)
    future = write_charts_task.submit(
        quote(forecasts), run.config.capacity, str(out_dir), run.now, len(forecasts), render=chart_svg
    )
    written, error = settle(future)
    if error is not None:
        log.warning("%s: charts not written: %s", ROUTINE_NAME, reason(error))
        return {}
    for item in items:
        if item.name in written:
            item.metrics["chart"] = written[item.name]
    return {f"chart:{name}": path for name, path in written.items()}


ROUTINE = Routine(
    name=ROUTINE_NAME,
    description="Forecast when each capacity metric reaches its threshold, with a band, robust to cleanups.",
    work=forecast_every_metric,
    report=capacity_markdown,
)

capacity_trends = routine_flow(ROUTINE, __name__)
