"""The SLA report's work (SPEC §5 sla-report, §6): per-service figures, checks, rendering inputs.

Plain functions first (``compute_sla``), thin ``@task`` wrappers below. The
figures come from PostgreSQL (``opsflow/sla_store.py``): weekly, daily and hourly
rollups for whole UTC weeks, days and hours outside maintenance, raw rows for the
rest, so they equal the raw-row answer. ``RULES`` states the rules in every report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow import sla_store
from opsflow.config import Config, Service
from opsflow.results import Check, Item, RoutineResult, format_instant
from opsflow.store import OpsStore
from opsflow.units import format_duration
from tasks.periods import Period
from tasks.retry import IO_RETRIES, TransientFailure

RULES = [
    "A probe result at time t covers [t, t + interval) of its service; when the next result comes sooner, "
    "it covers until the next result (no second is counted twice).",
    "Up time is covered by successful results, down time by failed ones; time covered by no result is no_data; "
    "time inside a maintenance window of the service is maintenance (neither up, down nor no_data).",
    "availability_pct = 100 * up / (up + down); error budget = (1 - slo) * (up + down); "
    "error_budget_remaining_pct = 100 * (1 - down / budget) (negative when overspent).",
    "Latency percentiles are over successful results outside maintenance, linear interpolation between closest "
    "ranks, read from log-scale histogram buckets (within 1% of the exact value).",
    "An incident opens at the first of failure_threshold consecutive failures and closes at the next success; "
    "results inside maintenance are skipped when counting; a gap in the data does not break a run; only results "
    "inside the period count, and an incident still open at the period's end is counted until the end. "
    "MTTR is the mean incident length.",
    "coverage_pct = 100 * (up + down) / (period - maintenance).",
]
PERCENTILES = (50.0, 95.0, 99.0)
#: Build-then-read attempts when probe runs keep dropping rollup rows in between (rare: after midnight).
READ_ATTEMPTS = 3

Window = tuple[datetime, datetime]


def merged_maintenance(config: Config, service: str, period: Period) -> list[Window]:
    """The service's maintenance windows clipped to the period and merged (disjoint, sorted)."""
    clipped = sorted(
        (max(w.start, period.start), min(w.end, period.end))
        for w in config.maintenance_for(service)
        if w.start < period.end and w.end > period.start
    )
    merged: list[Window] = []
    for start, end in clipped:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def outside(period: Period, windows: Sequence[Window]) -> list[Window]:
    """The period minus the (merged) windows."""
    ranges: list[Window] = []
    cursor = period.start
    for start, end in windows:
        if start > cursor:
            ranges.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < period.end:
        ranges.append((cursor, period.end))
    return ranges


def service_ranges(config: Config, period: Period) -> tuple[list[sla_store.Span], dict[str, list[Window]]]:
    """Every service's stretches of ``period`` outside its maintenance, and its merged windows."""
    ranges: list[sla_store.Span] = []
    windows: dict[str, list[Window]] = {}
    for service in config.services:
        windows[service.name] = merged_maintenance(config, service.name, period)
        ranges += [(service.name, a, b, service.interval) for a, b in outside(period, windows[service.name])]
    return ranges, windows


def percentile_from_histogram(histogram: dict[int, int], pct: float) -> float | None:
    """numpy's linear interpolation between closest ranks, each rank read as its bucket's value."""
    total = sum(histogram.values())
    if total == 0:
        return None
    position = pct / 100 * (total - 1)
    lower = math.floor(position)
    fraction = position - lower
    ordered = sorted(histogram.items())

    def value_at(rank: int) -> float:
        seen = 0
        for bucket, count in ordered:
            seen += count
            if rank < seen:
                return float(0.001 * 1.018 ** (bucket + 0.5))
        return float(0.001 * 1.018 ** (ordered[-1][0] + 0.5))

    low = value_at(lower)
    if fraction == 0:
        return low
    return low + fraction * (value_at(lower + 1) - low)


@dataclass
class ServiceSla:
    name: str
    metrics: dict[str, Any]
    checks: list[Check]


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def service_metrics(
    service: Service,
    period: Period,
    figures: sla_store.Figures,
    maintenance_seconds: float,
) -> dict[str, Any]:
    up, down = figures.up, figures.down
    measured = up + down
    in_scope = period.seconds - maintenance_seconds
    slo = service.slo.availability
    budget = (1 - slo / 100) * measured
    availability = 100 * up / measured if measured else None
    if measured == 0:
        remaining = None
    elif budget == 0:
        remaining = 100.0 if down == 0 else -math.inf
    else:
        remaining = 100 * (1 - down / budget)
    incidents = []
    for start, end in figures.incidents:
        stop = end or period.end
        incidents.append(
            {
                "start": format_instant(start),
                "end": format_instant(end) if end else None,
                "seconds": round((stop - start).total_seconds(), 3),
            }
        )
    mttr = sum(i["seconds"] for i in incidents) / len(incidents) if incidents else None
    p50, p95, p99 = (percentile_from_histogram(figures.histogram, p) for p in PERCENTILES)
    return {
        "availability_pct": _pct(availability),
        "slo_availability_pct": slo,
        "up_seconds": round(up, 3),
        "down_seconds": round(down, 3),
        "maintenance_seconds": round(maintenance_seconds, 3),
        "no_data_seconds": round(max(0.0, in_scope - measured), 3),
        "coverage_pct": _pct(100 * measured / in_scope if in_scope else None),
        "error_budget_seconds": round(budget, 3),
        "error_budget_remaining_pct": _pct(remaining) if remaining is None or math.isfinite(remaining) else None,
        "latency_p50_ms": None if p50 is None else round(p50, 3),
        "latency_p95_ms": None if p95 is None else round(p95, 3),
        "latency_p99_ms": None if p99 is None else round(p99, 3),
        "latency_samples": sum(figures.histogram.values()),
        "incidents": incidents,
        "mttr_seconds": None if mttr is None else round(mttr, 3),
        # How the figures were read when raw rows were dropped by retention (only then: other reports unchanged).
        **({"notes": list(figures.notes)} if figures.notes else {}),
    }


def slo_check(name: str, observed: float | None, expected: float, met: bool, detail: str, missing: str) -> Check:
    """A check against an SLO: ``warn`` when there is nothing to judge (``missing`` says why)."""
    if observed is None:
        return Check(check=name, status="warn", detail=missing, expected=expected)
    return Check(check=name, status="ok" if met else "fail", detail=detail, observed=observed, expected=expected)


def coverage_check(coverage: float | None, minimum: float) -> Check:
    """``coverage``: ``warn`` when less of the period than ``minimum`` (percent) was measured, or nothing at all;
    an SLA measured on too little data is not a clean ``ok``."""
    if coverage is None:
        return Check(
            check="coverage",
            status="warn",
            detail=f"nothing of the period measured, minimum {minimum:g}%",
            expected=minimum,
        )
    return Check(
        check="coverage",
        status="ok" if coverage >= minimum else "warn",
        detail=f"coverage {coverage:.2f}% of the period measured, minimum {minimum:g}%",
        observed=coverage,
        expected=minimum,
    )


def service_checks(service: Service, metrics: dict[str, Any]) -> list[Check]:
    """``availability`` against ``slo.availability``, ``latency_p95`` against ``slo.latency_p95`` when set, and
    ``coverage`` against ``slo.min_coverage``."""
    slo = service.slo.availability
    availability = metrics["availability_pct"]
    checks = [
        slo_check(
            "availability",
            availability,
            slo,
            met=availability is not None and availability >= slo,
            detail=f"{availability or 0:.3f}% available, SLO {slo:g}%, coverage {metrics['coverage_pct'] or 0:.2f}%",
            missing="no data in the period",
        )
    ]
    if service.slo.latency_p95 is not None:
        limit_ms = service.slo.latency_p95 * 1000
        p95 = metrics["latency_p95_ms"]
        checks.append(
            slo_check(
                "latency_p95",
                p95,
                limit_ms,
                met=p95 is not None and p95 <= limit_ms,
                detail=f"p95 {p95 or 0:.1f}ms, limit {format_duration(service.slo.latency_p95)}",
                missing="no successful probe in the period",
            )
        )
    coverage = coverage_check(metrics["coverage_pct"], service.slo.min_coverage)
    if metrics.get("notes"):  # the coverage text says how much of the period was read without raw rows
        coverage = coverage.model_copy(update={"detail": f"{coverage.detail}; {'; '.join(metrics['notes'])}"})
    checks.append(coverage)
    return checks


def compute_sla(store: OpsStore, config: Config, period: Period, use_rollups: bool = True) -> dict[str, dict[str, Any]]:
    """Every configured service's metrics for ``period`` (by service name)."""
    ranges, windows = service_ranges(config, period)
    plan = sla_store.plan_reads(ranges, use_rollups)
    thresholds = {s.name: s.failure_threshold for s in config.services}
    all_windows = [(name, a, b) for name, merged in windows.items() for a, b in merged]
    figures: dict[str, sla_store.Figures] | None = None
    for _ in range(READ_ATTEMPTS):
        with store.connection() as conn:
            sla_store.ensure_rollups(conn, plan)
        with store.connection() as conn, store.connection() as second:
            if sla_store.lock_for_reading(conn, plan):
                figures = sla_store.read_figures(
                    conn, plan, thresholds, period.start, period.end, all_windows, latency_conn=second
                )
                break
            # A probe run dropped a day or week between the build and the lock: build again.
    if figures is None:
        raise TransientFailure(f"SLA rollups for {period.label} kept changing while the report read them")
    maintenance = {name: sum((b - a).total_seconds() for a, b in merged) for name, merged in windows.items()}
    return {s.name: service_metrics(s, period, figures[s.name], maintenance[s.name]) for s in config.services}


COMPARED = ("availability_pct", "coverage_pct", "down_seconds", "latency_p95_ms", "mttr_seconds")


def build_items(
    config: Config, current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]] | None
) -> list[Item]:
    items = []
    for service in config.services:
        metrics = dict(current[service.name])
        if previous is not None:
            before = previous.get(service.name, {})
            metrics["previous"] = {key: before.get(key) for key in COMPARED}
            metrics["previous"]["incidents"] = len(before.get("incidents") or [])
            for key in COMPARED:
                now_value, then_value = metrics.get(key), before.get(key)
                metrics[f"{key}_change"] = (
                    None if now_value is None or then_value is None else round(now_value - then_value, 6)
                )
        items.append(Item(name=service.name, checks=service_checks(service, metrics), metrics=metrics))
    return items


# -- outputs -----------------------------------------------------------------------------------

CSV_COLUMNS = (
    "service",
    "status",
    "availability_pct",
    "slo_availability_pct",
    "up_seconds",
    "down_seconds",
    "maintenance_seconds",
    "no_data_seconds",
    "coverage_pct",
    "error_budget_seconds",
    "error_budget_remaining_pct",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "incident_count",
    "mttr_seconds",
)


def report_rows(result: RoutineResult) -> list[dict[str, Any]]:
    return [
        {
            "service": item.name,
            "status": item.status,
            **{k: item.metrics.get(k) for k in CSV_COLUMNS[2:] if k != "incident_count"},
            "incident_count": len(item.metrics.get("incidents") or []),
        }
        for item in result.items
    ]


def write_csv(result: RoutineResult, period: Period, out_dir: Path) -> Path:
    """The report's CSV under ``out_dir``, written atomically: a temporary file beside it, fsynced,
    then renamed over the old one (a reader never sees half a file; a failed write leaves nothing).

    Raises :class:`~opsflow.errors.PermanentFailure` naming the directory when it cannot be written
    (retrying does not make a path under a file, or a read-only disk, writable)."""
    import io

    from opsflow.files import write_atomically

    safe = period.label.replace(":", "").replace("..", "_to_").replace("/", "-")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    for row in report_rows(result):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_atomically(out_dir / f"sla-{period.kind}-{safe}.csv", text.getvalue(), what="the CSV")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(result: RoutineResult, period: Period, timezone: str) -> str:
    lines = [
        f"# SLA report {period.label} ({period.kind}): {result.status.upper()}",
        "",
        f"Period [{format_instant(period.start)}, {format_instant(period.end)}) in {timezone}, "
        f"{period.seconds:.0f} s · as of {format_instant(result.as_of)}",
        "",
        "| service | status | availability % | SLO % | coverage % | up s | down s | maintenance s | no data s "
        "| budget left % | p50 ms | p95 ms | p99 ms | incidents | MTTR s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in result.items:
        m = item.metrics
        lines.append(
            f"| {item.name} | {item.status} | {_fmt(m['availability_pct'])} | {_fmt(m['slo_availability_pct'])} "
            f"| {_fmt(m['coverage_pct'], 2)} | {_fmt(m['up_seconds'], 0)} | {_fmt(m['down_seconds'], 0)} "
            f"| {_fmt(m['maintenance_seconds'], 0)} | {_fmt(m['no_data_seconds'], 0)} "
            f"| {_fmt(m['error_budget_remaining_pct'], 1)} | {_fmt(m['latency_p50_ms'], 1)} "
            f"| {_fmt(m['latency_p95_ms'], 1)} | {_fmt(m['latency_p99_ms'], 1)} | {len(m['incidents'])} "
            f"| {_fmt(m['mttr_seconds'], 0)} |"
        )
    incidents = [(item.name, i) for item in result.items for i in item.metrics["incidents"]]
    if incidents:
        lines += ["", "## Incidents", "", "| service | start | end | seconds |", "|---|---|---|---|"]
        lines += [
            f"| {n} | {i['start']} | {i['end'] or 'open at period end'} | {i['seconds']:.0f} |" for n, i in incidents
        ]
    notes = dict.fromkeys(note for item in result.items for note in item.metrics.get("notes") or [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Rules", ""] + [f"- {rule}" for rule in RULES]
    return "\n".join(lines) + "\n"


# -- tasks ---------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="sla[{period.label}]")
def compute_sla_task(store: OpsStore, config: Config, period: Period) -> dict[str, dict[str, Any]]:
    return compute_sla(store, config, period)


def save_revision(store: OpsStore, result: RoutineResult, period: Period) -> int:
    """Store the report as a new revision of its period (bookkeeping: the flow retries it)."""
    with store.connection() as conn:
        return sla_store.save_report_revision(
            conn,
            period.label,
            period.kind,
            period.start,
            period.end,
            result.as_of,
            result.flow_run_id,
            result.to_json(),
        )


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="csv[{period.label}]")
def write_csv_task(result: RoutineResult, period: Period, out_dir: str) -> str:
    return str(write_csv(result, period, Path(out_dir)))


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="rollups[probe-results]")
def refresh_rollups_task(store: OpsStore, config: Config, checked: list[tuple[str, datetime]]) -> None:
    """Incremental rollup fill after a probe run."""
    refresh_rollups_for_rows(store, config, checked)


def rebuild_rollups(store: OpsStore, config: Config) -> int:
    """Rebuild every configured service's hourly, daily and weekly rollups from raw rows; return the
    hours written."""
    with store.connection() as conn:
        return sla_store.rebuild_all(conn, [(s.name, s.interval) for s in config.services])


def result_json(result: RoutineResult) -> dict[str, Any]:
    return json.loads(result.to_json())  # type: ignore[no-any-return]


# -- burn-rate alerts (SRE workbook: multiwindow, multi-burn-rate) ------------------------------

#: A window less than half measured is not judged (one failed probe of a new service is not a page).
MIN_WINDOW_COVERAGE = 0.5
BURN_WINDOWS: dict[str, float] = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}
#: (severity, long window, short window, burn rate above which both must be)
BURN_RULES: tuple[tuple[str, str, str, float], ...] = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "3d", "6h", 1.0),
)


def burn_rates(store: OpsStore, config: Config, now: datetime) -> dict[str, dict[str, float | None]]:
    """Each service's error-budget burn rate per window ending at ``now``: (down / (up + down)) / (1 - slo),
    maintenance taken out; None when less than half the window is measured."""
    rates: dict[str, dict[str, float | None]] = {s.name: {} for s in config.services}
    for label, seconds in BURN_WINDOWS.items():
        window = Period("range", label, now - timedelta(seconds=seconds), now)
        plan = sla_store.plan_reads(service_ranges(config, window)[0])
        with store.connection() as conn:
            sla_store.lock_rollups(conn)  # build and read in one transaction, no writer in between
            sla_store.ensure_rollups(conn, plan)
            figures = sla_store.up_down(conn, [s.name for s in config.services], plan)
        for service in config.services:
            f = figures[service.name]
            allowed = 1 - service.slo.availability / 100
            measured = f.up + f.down
            if measured < MIN_WINDOW_COVERAGE * seconds:
                # Too little data to judge (a fresh service, a long outage of the prober itself).
                rates[service.name][label] = None
            elif allowed <= 0:
                rates[service.name][label] = math.inf if f.down else 0.0
            else:
                rates[service.name][label] = (f.down / measured) / allowed
    return rates


def burn_check(rates: dict[str, float | None]) -> Check:
    """``burn_rate``: ``fail`` (pages) on a page rule, ``warn`` (Slack/webhook ticket) on the ticket rule."""

    def above(window: str, limit: float) -> bool:
        value = rates.get(window)
        return value is not None and value > limit

    shown = ", ".join(f"{w} {'—' if v is None else f'{v:.1f}x'}" for w, v in rates.items())
    for severity, long_w, short_w, limit in BURN_RULES:
        if above(long_w, limit) and above(short_w, limit):
            status = "fail" if severity == "page" else "warn"
            return Check(
                check="burn_rate",
                status=status,
                detail=f"{severity}: error budget burning over {limit:g}x in {long_w} and {short_w} ({shown})",
                observed={k: (None if v is None or not math.isfinite(v) else round(v, 3)) for k, v in rates.items()},
                expected=limit,
            )
    return Check(check="burn_rate", status="ok", detail=f"burn rates {shown}")


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="burn-rates[all services]")
def burn_rate_checks(store: OpsStore, config: Config, now: datetime) -> dict[str, Check]:
    """Each service's ``burn_rate`` check after a probe run."""
    return {name: burn_check(rates) for name, rates in burn_rates(store, config, now).items()}


def refresh_rollups_for_rows(store: OpsStore, config: Config, checked: list[tuple[str, datetime]]) -> None:
    """After a probe run or an import: refresh the rollups of the hours the rows touch (configured services only)."""
    with store.connection() as conn:
        sla_store.refresh_after_write(conn, {s.name: s.interval for s in config.services}, checked)
