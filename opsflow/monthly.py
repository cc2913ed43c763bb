"""The monthly stakeholder report's content, as data: what ``tasks/monthly.py`` gathers from stored results
and ``reports/monthly.py`` renders (HTML, PDF, charts). Plain dataclasses, no I/O, nothing recomputed:
every figure is one the routines stored (SPEC §1 stakeholder: numbers consistent with the SLA, backup,
drill, capacity, quality and expiry results of that month).

Times are aware UTC datetimes; durations are seconds; percentages are 0–100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class Incident:
    service: str
    start: datetime
    end: datetime | None  # None: still open at the end of the month
    seconds: float
    # The incident record with the same service and start (``opsflow incidents show ID``), when there is one:
    # its number, and how many alerts and escalation tiers it told.
    record: int | None = None
    alerts: int = 0
    escalations: int = 0


@dataclass(frozen=True)
class ServiceMonth:
    """One service's SLA for the month, as the stored monthly ``sla-report`` result has it."""

    service: str
    availability_pct: float | None
    slo_pct: float | None
    slo_met: bool | None
    downtime_seconds: float
    maintenance_seconds: float
    error_budget_remaining_pct: float | None
    latency_p95_ms: float | None
    latency_slo_ms: float | None
    coverage_pct: float | None
    incidents: list[Incident]
    mttr_seconds: float | None
    previous_availability_pct: float | None  # last month's, for "what changed"
    daily: list[tuple[date, float | None, float, float | None]] = field(default_factory=list)
    """Per day: (day, availability %, downtime seconds, latency p95 ms), when the daily reports are stored."""


@dataclass(frozen=True)
class BackupMonth:
    """One backup set's verification over the month, from its daily ``backup-verification`` results."""

    backup_set: str
    runs: int
    days_verified: int  # days with a run whose item for this set was ok or warn
    failed_runs: int  # runs whose item was fail or error
    objects_verified: int  # backups (objects) verified in the month, from the items' metrics
    last_status: str | None
    failures: list[str]  # "2026-10-04: fresh: newest backup is 31h old" (at most 10)


@dataclass(frozen=True)
class DrillMonth:
    """One DR drill run in the month (``dr-drill`` results, scope = database)."""

    database: str
    at: datetime
    status: str
    rto_seconds: float | None
    rto_target_seconds: float | None
    rpo_seconds: float | None
    rpo_target_seconds: float | None
    failing: list[str]  # "CHECK: detail" of its failing checks


@dataclass(frozen=True)
class CapacityForecast:
    """One metric's latest ``capacity-trends`` forecast in (or before the end of) the month."""

    metric: str
    status: str
    unit: str
    current: float | None
    threshold: float | None
    days_to_threshold: float | None
    days_to_threshold_low: float | None
    days_to_threshold_high: float | None
    crossing_date: date | None
    daily: list[tuple[date, float]] = field(default_factory=list)  # the stored history, for its chart
    fit: tuple[float, float] | None = None  # (value at the forecast's as_of, slope per day), when known


@dataclass(frozen=True)
class QualityTable:
    """One table's ``data-quality`` results over the month."""

    table: str
    runs: int
    passed_runs: int  # runs whose item was ok or warn
    last_status: str | None
    last_failing: list[str]  # "CHECK: detail" of the last run's failing checks


@dataclass(frozen=True)
class Expiring:
    """Something from the latest ``expiry-check`` that expires before the end of next month (or has)."""

    name: str
    status: str
    days_left: int | None
    expires_at: datetime | None
    source: str | None
    owner: str | None


@dataclass(frozen=True)
class Summary:
    """The executive summary's figures."""

    services: int
    slos_met: int
    slos_missed: int
    incidents: int
    downtime_seconds: float
    error_budget_remaining_pct: float | None  # the lowest of the services'
    backup_sets: int
    backup_runs_ok: int
    backup_runs_failed: int
    drills_passed: int
    drills_failed: int
    capacity_within_30_days: int
    capacity_within_90_days: int
    quality_pass_rate_pct: float | None
    expiring_next_month: int


@dataclass(frozen=True)
class StoredSource:
    """One stored result the report was built from (the appendix lists them; the digest covers them)."""

    routine: str
    scope: str
    as_of: datetime
    flow_run_id: str | None


@dataclass(frozen=True)
class MonthReport:
    """Everything the monthly report says, gathered from stored results only."""

    month: str  # "2026-10"
    timezone: str
    start: datetime
    end: datetime
    generated_at: datetime
    revision: int  # 1 for the first report of the month; a re-run is a new revision, marked as such
    summary: Summary
    changes: list[str]  # "what changed" against last month, one sentence each
    services: list[ServiceMonth]
    backups: list[BackupMonth]
    drills: list[DrillMonth]
    capacity: list[CapacityForecast]
    quality: list[QualityTable]
    expiring: list[Expiring]
    sources: list[StoredSource]
    digest: str  # sha256 (hex) over the canonical JSON of every stored result used, in ``sources`` order
    rules: list[str]  # the SLA accounting rules (SPEC §6), stated for the reader
    notes: list[str] = field(default_factory=list)  # what is missing ("no drill ran this month")
    extra: dict[str, Any] = field(default_factory=dict)
