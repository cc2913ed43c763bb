"""``monthly-report``: rendering the monthly stakeholder report for 1,000 services (issue 17: < 30 s).

A :class:`opsflow.monthly.MonthReport` is built in memory as ``tasks/monthly.py`` would gather it: 1,000
services with 31 days of daily data (availability, downtime, p95), an incident on every third service (1-3
each, 583 in all), 20 capacity forecasts with 92 days of history, 20 backup sets, 4 drills, 30 quality
tables, 10 expiring items and 120 stored sources. The figure is the wall time of everything the
delivery needs from ``reports/monthly.py``: the charts (SVG and PNG), the HTML, the email HTML and the PDF.
The baseline is the same pipeline for a 10-service month in the same run (fixed costs: matplotlib's and
WeasyPrint's imports are paid before timing), so the ratio shows how rendering scales with size.
``--quick``: 300 services (the target is still 30 s; the notes say so).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from bench.common import BenchResult
from opsflow.monthly import (
    BackupMonth,
    CapacityForecast,
    DrillMonth,
    Expiring,
    Incident,
    MonthReport,
    QualityTable,
    ServiceMonth,
    StoredSource,
    Summary,
)
from reports.monthly import monthly_charts, render_html, render_pdf

TARGET_SECONDS = 30.0
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)


def _service(index: int) -> ServiceMonth:
    """One service's month: deterministic, with incidents on every third service."""
    incidents = []
    for k in range(1 + index % 4 % 3 if index % 3 == 0 else 0):
        start = START + timedelta(days=(index * 7 + k * 11) % 30, minutes=index % 1440)
        seconds = 60.0 * (1 + (index * 13 + k) % 90)
        incidents.append(Incident(f"svc-{index:04d}", start, start + timedelta(seconds=seconds), seconds))
    downtime = sum(i.seconds for i in incidents)
    availability = 100 * (1 - downtime / (31 * 86400))
    daily = [
        (
            date(2026, 10, d),
            100.0 - (d * index % 11) / 1000,
            float(sum(i.seconds for i in incidents if i.start.day == d)),
            40.0 + (d * index) % 60,
        )
        for d in range(1, 32)
    ]
    return ServiceMonth(
        service=f"svc-{index:04d}",
        availability_pct=availability,
        slo_pct=99.9,
        slo_met=availability >= 99.9,
        downtime_seconds=downtime,
        maintenance_seconds=0.0,
        error_budget_remaining_pct=100 * (1 - downtime / 2678.4),
        latency_p95_ms=60.0 + index % 50,
        latency_slo_ms=300.0,
        coverage_pct=99.9,
        incidents=incidents,
        mttr_seconds=downtime / len(incidents) if incidents else None,
        previous_availability_pct=availability - 0.001 * (index % 7),
        daily=daily,
    )


def _forecast(index: int) -> CapacityForecast:
    history = [(date(2026, 8, 1) + timedelta(days=d), 40.0 + (0.1 + index / 50) * d) for d in range(92)]
    last, slope = history[-1][1], 0.1 + index / 50
    days = (80.0 - last) / slope
    crossing = history[-1][0] + timedelta(days=int(days)) if 0 < days < 365 else None
    return CapacityForecast(
        f"metric-{index:02d}",
        "warn" if days < 90 else "ok",
        "percent",
        last,
        80.0,
        days,
        days * 0.8,
        days * 1.2,
        crossing,
        history,
        (last, slope),
    )


def sample_report(services: int) -> MonthReport:
    """A month of ``services`` services with every other section filled (sizes as in the module docstring)."""
    rows = [_service(i) for i in range(services)]
    incidents = sum(len(s.incidents) for s in rows)
    return MonthReport(
        month="2026-10",
        timezone="UTC",
        start=START,
        end=END,
        generated_at=END,
        revision=1,
        summary=Summary(
            services,
            sum(bool(s.slo_met) for s in rows),
            sum(not s.slo_met for s in rows),
            incidents,
            sum(s.downtime_seconds for s in rows),
            min(s.error_budget_remaining_pct or 0 for s in rows),
            20,
            600,
            8,
            3,
            1,
            2,
            5,
            96.5,
            4,
        ),
        changes=[f"svc-{i:04d} missed its SLO" for i in range(0, min(services, 30), 3)],
        services=rows,
        backups=[BackupMonth(f"set-{i}", 31, 30, i % 2, 31, "ok", []) for i in range(20)],
        drills=[
            DrillMonth(f"db-{i}", START + timedelta(days=7 * i), "ok", 600.0 + i, 3600.0, 3600.0, 86400.0, [])
            for i in range(4)
        ],
        capacity=[_forecast(i) for i in range(20)],
        quality=[QualityTable(f"schema.table_{i}", 31, 30, "ok", []) for i in range(30)],
        expiring=[Expiring(f"cert-{i}", "warn", 10 + i, END + timedelta(days=10 + i), "tls", "ops") for i in range(10)],
        sources=[StoredSource("sla-report", f"svc-{i:04d}", END, None) for i in range(120)],
        digest="0" * 64,
        rules=["availability_pct = 100 * up / (up + down)"],
    )


def render_all(report: MonthReport) -> dict[str, int]:
    """Everything delivery needs; returns the sizes (bytes) of what was made."""
    charts = monthly_charts(report)
    html = render_html(report, charts)
    email = render_html(report, charts, for_email=True)
    pdf = render_pdf(html)
    return {"html": len(html.encode()), "email": len(email.encode()), "pdf": len(pdf), "charts": len(charts.svg)}


def run(quick: bool) -> BenchResult:
    services = 300 if quick else 1000
    small, large = sample_report(10), sample_report(services)
    render_all(small)  # warm-up: imports of matplotlib and WeasyPrint, font discovery
    started = time.perf_counter()
    render_all(small)
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    sizes = render_all(large)
    figure = time.perf_counter() - started
    incidents = sum(len(s.incidents) for s in large.services)
    return BenchResult(
        name="monthly-report",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="the same rendering for 10 services",
        ratio=figure / baseline,
        target=f"< {TARGET_SECONDS:g} s",
        met=figure < TARGET_SECONDS,
        notes=(
            f"{'QUICK: ' if quick else ''}{services} services x 31 days, {incidents} incidents, "
            f"{len(large.capacity)} forecasts; charts (SVG+PNG) + HTML + email HTML + PDF; "
            f"HTML {sizes['html'] / 1e6:.1f} MB, email {sizes['email'] / 1e6:.1f} MB, PDF {sizes['pdf'] / 1e6:.1f} MB, "
            f"{sizes['charts']} charts"
        ),
    )


if __name__ == "__main__":
    print(run(quick=False))
