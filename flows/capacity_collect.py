"""Capacity collection — hourly: sample every resource metric into the ops store.

For every metric of ``opsflow.yaml`` (``capacity:``) whose source is not ``import``, one task run
``collect[METRIC]`` (run concurrently) reads it now: a PostgreSQL database's size or its connections
against ``max_connections``, an S3 bucket's or prefix's bytes (or objects), a filesystem's usage, a
Prometheus query. A Prometheus metric without history is backfilled over its window (``query_range``).
Every sample is written in one COPY (``write[capacity-samples]``). Each metric's ``threshold`` check
fails when the value is at or over its threshold now; a source that cannot be read is that metric's
``error``, the others are still sampled. ``capacity-trends`` forecasts from what this stores.

Schedule: hourly at minute 5 (``prefect.yaml``). Needs: the ops store, read access to each source.
Result: stored, alerted, and published under the artifact key ``capacity-collect``.

    opsflow run capacity-collect [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from flows._routine import Routine, RoutineRun, reason, routine_flow
from opsflow.results import Item
from tasks.capacity.collect import (
    collect_task,
    collected_metrics,
    metrics_with_history_task,
    unreadable,
    write_samples_task,
)
from tasks.routine import settle


def collect_every_metric(run: RoutineRun) -> list[Item]:
    """One ``collect[METRIC]`` task run per collected metric, all at once, then one write of every sample."""
    metrics = collected_metrics(run.config)
    prometheus = [metric.metric for metric in metrics if metric.source.type == "prometheus"]
    # A Prometheus metric without history is backfilled from Prometheus: forecasts need weeks of it.
    backfill = set(prometheus) - (metrics_with_history_task(run.store, prometheus) if prometheus else set())
    futures = [
        (metric, collect_task.submit(metric, run.config, run.now, metric.metric in backfill)) for metric in metrics
    ]
    items, rows = [], []
    for metric, future in futures:
        collected, error = settle(future)
        if error is not None:
            items.append(unreadable(metric, reason(error)))
            continue
        items.append(collected.item)
        rows += collected.rows
    if rows:
        write_samples_task(run.store, rows)
    return items


ROUTINE = Routine(
    name="capacity-collect",
    description="Sample every capacity metric (databases, buckets, filesystems, Prometheus) into the ops store.",
    work=collect_every_metric,
)

capacity_collect = routine_flow(ROUTINE, __name__)
