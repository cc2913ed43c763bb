"""Capacity collection: sample every configured metric now, one ``collect[METRIC]`` task run each, and write
every sample in one COPY (``write[capacity-samples]``).

A metric's item has one check, ``threshold``: ``fail`` when the value just sampled is at or over the
metric's threshold (the disk that is 80% full now, not in a forecast), ``ok`` otherwise; a source that
cannot be read after its retries is that metric's ``error`` and does not stop the others. A Prometheus
metric with no history yet is backfilled over its window from Prometheus itself (``query_range``), so its
first forecast does not wait weeks. Metrics fed by ``opsflow capacity import`` are not collected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import CapacityMetric, Config
from opsflow.history_csv import CapacityRow
from opsflow.results import Check, Item
from opsflow.store import ImportCount, OpsStore
from opsflow.units import format_quantity
from tasks.retry import IO_RETRIES, PermanentFailure
from tasks.routine import failing_checks, finding_state

#: A backfilled history has the collection's own cadence: hourly.
BACKFILL_STEP = timedelta(hours=1)


@dataclass(frozen=True)
class Collected:
    """What one metric's collection found: its item, and the samples to store."""

    item: Item
    rows: tuple[CapacityRow, ...]


def collected_metrics(config: Config) -> list[CapacityMetric]:
    """The metrics a collection samples: every one whose source is not ``import``."""
    return [metric for metric in config.capacity if metric.source.type != "import"]


def threshold_check(metric: CapacityMetric, value: float) -> Check:
    """``fail`` when ``value`` is at or over the metric's threshold, else ``ok``; the detail says both."""
    unit = metric.threshold.unit
    shown, limit = format_quantity(value, unit), format_quantity(metric.threshold.value, unit)
    measured = {"observed": value, "expected": f"< {metric.threshold.value:g}"}
    if value >= metric.threshold.value:
        return Check(
            check="threshold", status="fail", detail=f"{shown} is at or over the threshold {limit}", **measured
        )
    return Check(check="threshold", status="ok", detail=f"{shown} (threshold {limit})", **measured)


def collect_metric(metric: CapacityMetric, config: Config, now: datetime, backfill: bool) -> Collected:
    """Sample ``metric`` now (and, with ``backfill``, its window's history from Prometheus)."""
    from tasks.capacity.sources import backfill_prometheus, sample_metric

    samples = list(sample_metric(metric, config, now))
    if not samples:
        raise PermanentFailure(f"{metric.metric}: the source returned no sample")
    history = []
    if backfill and metric.source.type == "prometheus":
        start = now - timedelta(seconds=metric.window)
        history = list(backfill_prometheus(metric, start, now, BACKFILL_STEP))
    rows = tuple(CapacityRow(s.metric, s.ts, s.value) for s in [*history, *samples] if math.isfinite(s.value))
    latest = samples[-1]
    item = Item(
        name=metric.metric,
        checks=[threshold_check(metric, latest.value)],
        metrics={
            "value": latest.value,
            "unit": metric.threshold.unit,
            "threshold": metric.threshold.value,
            "sampled_at": latest.ts.isoformat(),
            "source": metric.source.type,
            "backfilled": len(history),
        },
    )
    return Collected(item=item, rows=rows)


def unreadable(metric: CapacityMetric, why: str) -> Item:
    """The item of a metric whose source could not be read (its retries exhausted)."""
    detail = f"{metric.metric} ({metric.source.type}) not sampled: {why}"
    return Item(name=metric.metric, checks=[Check(check="threshold", status="error", detail=detail)])


# -- tasks ------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="collect[{metric.metric}]")
def collect_task(metric: CapacityMetric, config: Config, now: datetime, backfill: bool) -> Collected | State[Collected]:
    collected = collect_metric(metric, config, now, backfill)
    return finding_state(collected, failing_checks(collected.item))


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="history[capacity-samples]")
def metrics_with_history_task(store: OpsStore, metrics: Sequence[str]) -> set[str]:
    return store.capacity_metrics_with_samples(metrics)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="write[capacity-samples]")
def write_samples_task(store: OpsStore, rows: Sequence[CapacityRow]) -> ImportCount:
    return store.write_capacity_samples(rows)
