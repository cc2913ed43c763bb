"""The daily and weekly ops digest's content, as data: what ``tasks/digest.py`` gathers from the ops store
(and the schedules) and ``reports/digest.py`` renders (markdown, Slack blocks, email). Plain dataclasses,
no I/O, nothing recomputed here.

Times are aware UTC datetimes; durations are seconds; percentages are 0–100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

DigestKind = Literal["day", "week", "custom"]


@dataclass(frozen=True)
class RoutineLine:
    """One routine over the period: its runs, its latest run, and whether its schedule ran it at all."""

    routine: str
    configured: bool  # it has something to check in the config
    runs: dict[str, int]  # stored runs in the period by status: ok, warn, fail, error (all four keys)
    last_status: str | None  # the latest run's status (None: no run in the period)
    last_run_at: datetime | None
    last_flow_run_id: str | None
    failing: list[str]  # "ITEM: CHECK" of the latest run's failing (fail/error) checks
    fired: int  # 1 when its schedules were due in the period, 0 when not (or it has none)
    ran: Literal["ok", "fail"]  # fail: configured, its schedule fired, and no run was recorded
    ran_detail: str

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())


@dataclass(frozen=True)
class IncidentLine:
    id: int
    service: str
    start: datetime
    end: datetime | None  # None: still open
    seconds: float  # up to the end of the period (or now) while open


@dataclass(frozen=True)
class DrillLine:
    database: str
    at: datetime
    status: str
    rto_seconds: float | None
    rpo_seconds: float | None
    rto_target_seconds: float | None
    rpo_target_seconds: float | None
    flow_run_id: str | None


@dataclass(frozen=True)
class ExpiringLine:
    name: str
    source: str  # tls, file, date
    expires_at: datetime | None
    days_left: float | None
    status: str  # warn or fail (error: could not be read)
    detail: str = ""


@dataclass(frozen=True)
class RunwayLine:
    """A capacity metric whose runway (days to its threshold) shortened in the period."""

    metric: str
    days_to_threshold: float | None
    previous_days_to_threshold: float | None
    crossing_date: str | None
    status: str


@dataclass(frozen=True)
class BudgetLine:
    """A service's SLO error budget over the month so far."""

    service: str
    availability_pct: float | None
    slo_pct: float | None
    error_budget_remaining_pct: float | None


@dataclass(frozen=True)
class TrendLine:
    """A service's availability and latency p95 this week against last week (weekly digest only)."""

    service: str
    availability_pct: float | None
    previous_availability_pct: float | None
    latency_p95_ms: float | None
    previous_latency_p95_ms: float | None


@dataclass(frozen=True)
class Digest:
    kind: DigestKind
    label: str  # "2026-12-04", "2026-W48", or "FROM..TO"
    start: datetime
    end: datetime
    timezone: str
    generated_at: datetime
    routines: list[RoutineLine]
    incidents: list[IncidentLine]  # those overlapping the period, oldest first
    opened: int  # incidents opened in the period
    closed: int  # incidents closed in the period
    open_now: int  # incidents open at the end of the period
    backups_verified: int  # backup objects verified in the period (the verification ledger)
    drills: list[DrillLine]
    expiring: list[ExpiringLine]
    runway: list[RunwayLine]
    budget: list[BudgetLine]  # month to date
    budget_label: str  # the month-to-date period, e.g. "2026-12-01..2026-12-05"
    trends: list[TrendLine] = field(default_factory=list)  # weekly only
    ui_url: str | None = None
    status_page: str | None = None  # file path of the at-a-glance status page, when written
