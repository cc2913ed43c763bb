"""The monthly stakeholder report's content (SPEC §1 stakeholder, issue 17), gathered from stored results only.

Plain functions, no Prefect: :func:`gather_month` reads the ops store's routine results for a month and
fills :class:`opsflow.monthly.MonthReport` (rendered by ``reports/monthly.py``). Nothing is measured again:
every figure is one a routine stored, copied or counted, so the report cannot disagree with the SLA,
backup, drill, capacity, quality and expiry results of that month. Missing data is never an exception:
the section stays empty and ``notes`` says what is missing and how to get it.

Which results are used (``start``/``end``: the month's bounds, local midnights of the config's timezone):

- SLA: the newest ``sla-report`` result with scope = the month's label (``2026-10``) made at or after
  ``end`` (an earlier one covers part of the month only and is not used); last month's the same way; the
  daily reports (scope = the day's label) for the per-day figures, the newest complete one per day.
- backups, drills, data quality: every result with ``start <= as_of < end`` (drills: any scope, the
  database).
- capacity, expiry: the latest result with ``as_of < end``.

Every result used is listed in ``sources`` (sorted by routine, scope, as_of) and covered by ``digest``
(see :func:`results_digest` for the recipe). No result with ``as_of`` after ``now`` is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config
from opsflow.incident_store import IncidentRecord, list_incidents
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
from opsflow.results import Item, RoutineResult
from opsflow.store import OpsStore
from tasks.periods import day_period, month_period
from tasks.retry import IO_RETRIES

__all__ = ["gather_month", "month_bounds", "results_digest", "sla_rules"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY_LABEL = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY = timedelta(days=1)
#: How far before a month's end the latest capacity forecast / expiry check is looked for.
LOOKBACK = timedelta(days=92)
MAX_FAILURES = 10
PASSING = ("ok", "warn")
FAILING = ("fail", "error")
DEFAULT_CAPACITY_WINDOW = 90 * 86400.0

Used = tuple[str, RoutineResult]  # (scope, result) as the store returns it


def month_bounds(month: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``month`` (``YYYY-MM``): its first local midnight and the next month's, in ``tz``,
    as aware UTC datetimes. Raises ValueError for anything but a real month (a usage error, not missing data).

    >>> from zoneinfo import ZoneInfo
    >>> month_bounds("2026-10", ZoneInfo("Europe/Berlin"))
    (datetime.datetime(2026, 9, 30, 22, 0, tzinfo=datetime.timezone.utc), \
datetime.datetime(2026, 10, 31, 23, 0, tzinfo=datetime.timezone.utc))
    """
    match = _MONTH.match(month.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    period = month_period(date(int(match[1]), int(match[2]), 1), tz)
    return period.start, period.end


def previous_month(month: str) -> str:
    """``2026-10`` → ``2026-09``; ``2026-01`` → ``2025-12``."""
    year, number = int(month[:4]), int(month[5:7])
    return f"{year - (number == 1)}-{(number - 2) % 12 + 1:02d}"


def results_digest(results: Sequence[RoutineResult]) -> str:
    """The report's ``digest``: sha256 (hex) of the results' canonical JSON, one per line.

    Recipe (to recompute it from the store): for each source of the report, in ``sources`` order (routine,
    scope, as_of), read its row of ``opsflow.routine_runs`` (``routine, scope, as_of``), load the ``result``
    column with ``RoutineResult.model_validate``, and take
    ``json.dumps(result.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))``; join these texts
    with ``"\\n"`` (no trailing newline), encode as UTF-8 and hash with SHA-256.

    >>> results_digest([]) == hashlib.sha256(b"").hexdigest()
    True
    """
    texts = [json.dumps(r.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) for r in results]
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def sla_rules() -> list[str]:
    """The SLA accounting rules (SPEC §6) as the SLA report states them, plus how the month report uses them."""
    from tasks.sla import RULES  # the same sentences every SLA report states: one source for the rules

    return [
        *RULES,
        "Time with no probe result (no_data) and maintenance time count neither as up nor as down: they are "
        "outside availability and the error budget.",
        "An SLA with coverage below the service's slo.min_coverage (default 90%) is a coverage warning, not a "
        "clean ok.",
        "Every figure in this report is the one the monthly SLA report stored for the month; nothing is "
        "recomputed here.",
    ]


# -- small readers -------------------------------------------------------------------------------------------


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _failing(item: Item) -> list[str]:
    """``CHECK: detail`` of the item's fail/error checks, in the item's order."""
    return [f"{c.check}: {c.detail}" for c in item.checks if c.status in FAILING]


def _newest(used: Sequence[Used]) -> Used | None:
    return max(used, key=lambda pair: pair[1].as_of, default=None)


# -- SLA -------------------------------------------------------------------------------------------------------


@dataclass
class _Gathering:
    """What one gathering read: the results used, and what it has to say about missing pieces."""

    config: Config
    now: datetime
    used: list[tuple[str, Used]] = field(default_factory=list)  # (routine, (scope, result))
    notes: list[str] = field(default_factory=list)

    def use(self, routine: str, pair: Used) -> RoutineResult:
        self.used.append((routine, pair))
        return pair[1]


def _monthly_sla(store: OpsStore, g: _Gathering, label: str, end: datetime) -> Used | None:
    """The newest complete monthly SLA report for ``label`` (made at or after the month's ``end``)."""
    start, _ = month_bounds(label, g.config.tzinfo)
    stored = store.results_between("sla-report", start, g.now + timedelta(microseconds=1), scope=label)
    complete = [pair for pair in stored if pair[1].as_of >= end]
    if not complete and stored:
        g.notes.append(
            f"the SLA report for {label} stored as of {stored[-1][1].as_of:%Y-%m-%d %H:%M}Z was made before the "
            f"month ended and covers part of it only: not used; run `opsflow run sla-report --period {label}`"
        )
    return _newest(complete)


def _service_items(result: RoutineResult | None) -> dict[str, Item]:
    # The synthetic "report-output" item (a CSV that could not be written) is not a service.
    return {i.name: i for i in (result.items if result else []) if "availability_pct" in i.metrics}


def _daily_sla(store: OpsStore, g: _Gathering, start: datetime, end: datetime) -> dict[str, list[Any]]:
    """Per service, ``(day, availability, downtime, p95)`` from the newest complete daily report of each day."""
    zone = g.config.tzinfo
    stored = store.results_between("sla-report", start, g.now + timedelta(microseconds=1))
    days: dict[str, Used] = {}
    for scope, result in stored:
        try:
            day = day_period(date.fromisoformat(scope), zone) if _DAY_LABEL.match(scope) else None
        except ValueError:  # a FROM..TO-like label that only looks like a date
            day = None
        if day is None:
            continue
        # A day of the month, and a report made once the day was over (an earlier one is partial).
        if (
            start <= day.start < end
            and result.as_of >= day.end
            and (scope not in days or result.as_of >= days[scope][1].as_of)
        ):
            days[scope] = (scope, result)
    daily: dict[str, list[Any]] = {}
    for scope in sorted(days):
        result = g.use("sla-report", days[scope])
        for name, item in _service_items(result).items():
            m = item.metrics
            day = date.fromisoformat(scope)
            down = float(m.get("down_seconds") or 0.0)
            daily.setdefault(name, []).append(
                (day, _number(m.get("availability_pct")), down, _number(m.get("latency_p95_ms")))
            )
    return daily


def _incidents(service: str, metrics: dict[str, Any]) -> list[Incident]:
    incidents = []
    for entry in metrics.get("incidents") or []:
        start = _instant(entry.get("start"))
        if start is not None:
            incidents.append(Incident(service, start, _instant(entry.get("end")), float(entry.get("seconds") or 0.0)))
    return incidents


def with_incident_records(services: list[ServiceMonth], records: Sequence[IncidentRecord]) -> list[ServiceMonth]:
    """The SLA report's incidents joined to the incident records (same rule, same start): the record's number
    and what it told, so the report and ``opsflow incidents show ID`` speak of the same incident."""
    by_start = {(r.service, r.start): r for r in records}

    def joined(incident: Incident) -> Incident:
        record = by_start.get((incident.service, incident.start))
        if record is None:
            return incident
        return replace(incident, record=record.id, alerts=record.alerts, escalations=record.escalations)

    return [replace(s, incidents=[joined(i) for i in s.incidents]) for s in services]


def _service_month(item: Item, previous: float | None, daily: list[Any]) -> ServiceMonth:
    """One service as the stored monthly report has it; the SLO verdict is the stored ``availability`` check's."""
    m = item.metrics
    availability, latency = item.check_named("availability"), item.check_named("latency_p95")
    verdict = None if availability is None or availability.status not in ("ok", "fail") else availability.status == "ok"
    return ServiceMonth(
        service=item.name,
        availability_pct=_number(m.get("availability_pct")),
        slo_pct=_number(m.get("slo_availability_pct")),
        slo_met=verdict,
        downtime_seconds=float(m.get("down_seconds") or 0.0),
        maintenance_seconds=float(m.get("maintenance_seconds") or 0.0),
        error_budget_remaining_pct=_number(m.get("error_budget_remaining_pct")),
        latency_p95_ms=_number(m.get("latency_p95_ms")),
        latency_slo_ms=_number(latency.expected) if latency is not None else None,
        coverage_pct=_number(m.get("coverage_pct")),
        incidents=_incidents(item.name, m),
        mttr_seconds=_number(m.get("mttr_seconds")),
        previous_availability_pct=previous,
        daily=daily,
    )


def _services(
    store: OpsStore, g: _Gathering, month: str, bounds: tuple[datetime, datetime]
) -> tuple[list[ServiceMonth], dict[str, Item] | None]:
    """The month's services, and last month's stored SLA items (None when last month has no report)."""
    start, end = bounds
    current = _monthly_sla(store, g, month, end)
    if current is None:
        g.notes.append(f"no monthly SLA report stored for {month}: run `opsflow run sla-report --period {month}` first")
        return [], None
    before = previous_month(month)
    previous = _monthly_sla(store, g, before, start)
    items = _service_items(g.use("sla-report", current))
    last = _service_items(g.use("sla-report", previous)) if previous else None
    if last is None:
        g.notes.append(
            f"no monthly SLA report stored for {before}: last month's availability is the one the {month} report "
            "computed for comparison"
        )
    daily = _daily_sla(store, g, start, end)
    if items and not daily:
        g.notes.append(f"no daily SLA reports stored for {month}: no per-day figures")
    services = []
    for name, item in items.items():
        if last is not None:
            then = _number(last[name].metrics.get("availability_pct")) if name in last else None
        else:  # the routine's own comparison, stored in this month's report
            then = _number((item.metrics.get("previous") or {}).get("availability_pct"))
        services.append(_service_month(item, then, daily.get(name, [])))
    return services, last


# -- backups, drills, quality ------------------------------------------------------------------------------------


def _backups(stored: Sequence[Used], zone: tzinfo) -> list[BackupMonth]:
    """Per backup set over the month's ``backup-verification`` results (oldest first).

    ``objects_verified`` counts the set's runs that verified it (item ok or warn): the items' metrics
    (``count``, ``newest_*``, ``age_seconds``) do not say how many objects a run verified (that is in the
    verification ledger, ``opsflow.backup_verifications``, not in the stored results)."""
    per_set: dict[str, list[tuple[datetime, Item]]] = {}
    for _, result in stored:
        for item in result.items:
            per_set.setdefault(item.name, []).append((result.as_of, item))
    backups = []
    for name in sorted(per_set):
        runs = per_set[name]
        good = [at for at, item in runs if item.status in PASSING]
        failures = [
            f"{at.astimezone(zone):%Y-%m-%d}: {_failing(item)[0]}"
            for at, item in runs
            if item.status in FAILING and _failing(item)
        ]
        backups.append(
            BackupMonth(
                backup_set=name,
                runs=len(runs),
                days_verified=len({at.astimezone(zone).date() for at in good}),
                failed_runs=sum(1 for _, item in runs if item.status in FAILING),
                objects_verified=len(good),
                last_status=runs[-1][1].status,
                failures=failures[:MAX_FAILURES],
            )
        )
    return backups


def _drills(stored: Sequence[Used]) -> list[DrillMonth]:
    drills = []
    for scope, result in stored:
        for item in result.items:
            m = item.metrics
            drills.append(
                DrillMonth(
                    database=item.name or scope,
                    at=result.as_of,  # the drill stores its start as the result's as_of
                    status=item.status,
                    rto_seconds=_number(m.get("rto_seconds")),
                    rto_target_seconds=_number(m.get("rto_target_seconds")),
                    rpo_seconds=_number(m.get("rpo_seconds")),
                    rpo_target_seconds=_number(m.get("rpo_target_seconds")),
                    failing=_failing(item),
                )
            )
    return drills


def _quality(stored: Sequence[Used]) -> list[QualityTable]:
    per_table: dict[str, list[Item]] = {}
    for _, result in stored:
        for item in result.items:
            per_table.setdefault(item.name, []).append(item)
    return [
        QualityTable(
            table=name,
            runs=len(items),
            passed_runs=sum(1 for item in items if item.status in PASSING),
            last_status=items[-1].status,
            last_failing=_failing(items[-1]),
        )
        for name, items in sorted(per_table.items())
    ]


# -- capacity, expiry ------------------------------------------------------------------------------------------


def _daily_max(times: Sequence[datetime], values: Sequence[float]) -> list[tuple[date, float]]:
    """One value per UTC day, the day's maximum: the same days the forecast fits (tasks/capacity/forecast.py)."""
    peaks: dict[date, float] = {}
    for moment, value in zip(times, values, strict=True):
        day = moment.astimezone(UTC).date()
        peaks[day] = max(value, peaks.get(day, value))
    return sorted(peaks.items())


def _capacity(store: OpsStore, g: _Gathering, stored: Used) -> list[CapacityForecast]:
    """The forecast's items, each with its stored history over its window before the forecast's as_of.

    ``fit`` stays None: the result stores the slope but not the fitted value at as_of (``current`` is the
    latest daily maximum, not the fit), so the line cannot be drawn without recomputing it."""
    result = stored[1]
    windows = {m.metric: m.window for m in g.config.capacity}
    forecasts = []
    for item in result.items:
        m = item.metrics
        window = timedelta(seconds=windows.get(item.name, DEFAULT_CAPACITY_WINDOW))
        times, values = store.capacity_series([item.name], result.as_of - window, result.as_of)[item.name]
        crossing = m.get("crossing_date")
        forecasts.append(
            CapacityForecast(
                metric=item.name,
                status=item.status,
                unit=str(m.get("unit") or ""),
                current=_number(m.get("current")),
                threshold=_number(m.get("threshold")),
                days_to_threshold=_number(m.get("days_to_threshold")),
                days_to_threshold_low=_number(m.get("days_to_threshold_low")),
                days_to_threshold_high=_number(m.get("days_to_threshold_high")),
                crossing_date=date.fromisoformat(crossing) if isinstance(crossing, str) else None,
                daily=_daily_max(times, values),
            )
        )
    return forecasts


def expiry_horizon_days(as_of: datetime, month_end: datetime, zone: tzinfo) -> int:
    """Whole days from the expiry check's ``as_of`` to the end of the month after the report's month (local
    midnight), rounded down: an item with ``days_left`` up to this expires before next month is over."""
    first_of_next = month_end.astimezone(zone).date()
    _, next_end = month_bounds(f"{first_of_next:%Y-%m}", zone)
    return int((next_end - as_of) // DAY)


def _expiring(result: RoutineResult, month_end: datetime, g: _Gathering) -> list[Expiring]:
    horizon = expiry_horizon_days(result.as_of, month_end, g.config.tzinfo)
    found, unknown = [], []
    for item in result.items:
        left = item.metrics.get("days_left")
        if not isinstance(left, int) or isinstance(left, bool):
            unknown.append(item.name)  # an unreadable certificate: its expiry is unknown, said in a note
            continue
        if left <= horizon:
            m = item.metrics
            found.append(
                Expiring(item.name, item.status, left, _instant(m.get("expires_at")), m.get("source"), m.get("owner"))
            )
    if unknown:
        g.notes.append(f"the latest expiry check could not tell when these expire: {', '.join(sorted(unknown))}")
    return sorted(found, key=lambda e: (e.days_left, e.name))


def _latest_before(store: OpsStore, routine: str, end: datetime) -> Used | None:
    return _newest(store.results_between(routine, end - LOOKBACK, end))


# -- summary, changes, sources ---------------------------------------------------------------------------------


def _within(forecast: CapacityForecast, days: float) -> bool:
    # The band's early edge when stored, else the middle forecast (an insufficient history has neither).
    runway = forecast.days_to_threshold_low
    runway = forecast.days_to_threshold if runway is None else runway
    return runway is not None and runway <= days


def _summary(report: dict[str, Any]) -> Summary:
    """Counts of the gathered sections; nothing measured."""
    services: list[ServiceMonth] = report["services"]
    backups: list[BackupMonth] = report["backups"]
    drills: list[DrillMonth] = report["drills"]
    capacity: list[CapacityForecast] = report["capacity"]
    quality: list[QualityTable] = report["quality"]
    budgets = [s.error_budget_remaining_pct for s in services if s.error_budget_remaining_pct is not None]
    runs = sum(t.runs for t in quality)
    return Summary(
        services=len(services),
        slos_met=sum(1 for s in services if s.slo_met is True),
        slos_missed=sum(1 for s in services if s.slo_met is False),
        incidents=sum(len(s.incidents) for s in services),
        downtime_seconds=sum(s.downtime_seconds for s in services),
        error_budget_remaining_pct=min(budgets, default=None),
        backup_sets=len(backups),
        backup_runs_ok=sum(b.runs - b.failed_runs for b in backups),
        backup_runs_failed=sum(b.failed_runs for b in backups),
        drills_passed=sum(1 for d in drills if d.status in PASSING),
        drills_failed=sum(1 for d in drills if d.status in FAILING),
        capacity_within_30_days=sum(1 for f in capacity if _within(f, 30)),
        capacity_within_90_days=sum(1 for f in capacity if _within(f, 90)),
        quality_pass_rate_pct=100 * sum(t.passed_runs for t in quality) / runs if runs else None,
        expiring_next_month=len(report["expiring"]),
    )


def _changes(
    services: list[ServiceMonth],
    last_items: dict[str, Item] | None,
    now: tuple[list[BackupMonth], list[DrillMonth]],
    then: tuple[list[BackupMonth], list[DrillMonth]],
) -> list[str]:
    """One sentence per figure that differs from last month's, where both months have it."""
    changes = []
    for s in services:
        if s.availability_pct is not None and s.previous_availability_pct is not None:
            current, previous = f"{s.availability_pct:.3f}", f"{s.previous_availability_pct:.3f}"
            if current != previous:
                changes.append(f"{s.service} availability {current}% (was {previous}%)")
    if services and last_items is not None:
        incidents = sum(len(s.incidents) for s in services)
        before = sum(len(i.metrics.get("incidents") or []) for i in last_items.values())
        if incidents != before:
            changes.append(f"{incidents} incidents (was {before})")
    (backups, drills), (old_backups, old_drills) = now, then
    if backups and old_backups:
        failed, before = sum(b.failed_runs for b in backups), sum(b.failed_runs for b in old_backups)
        if failed != before:
            changes.append(f"{failed} failed backup verifications (was {before})")
    passed = sum(1 for d in drills if d.status in PASSING)
    old_passed = sum(1 for d in old_drills if d.status in PASSING)
    if (len(drills), passed) != (len(old_drills), old_passed):
        changes.append(f"{len(drills)} drills, {passed} passed (was {len(old_drills)}, {old_passed} passed)")
    return changes


def _sources(used: Sequence[tuple[str, Used]]) -> tuple[list[StoredSource], str]:
    """Every result used once, sorted by (routine, scope, as_of), and their digest (:func:`results_digest`)."""
    unique = {(routine, scope, result.as_of): result for routine, (scope, result) in used}
    keys = sorted(unique)
    sources = [StoredSource(routine, scope, at, unique[routine, scope, at].flow_run_id) for routine, scope, at in keys]
    return sources, results_digest([unique[key] for key in keys])


# -- the month -------------------------------------------------------------------------------------------------


def _in_month(
    store: OpsStore, g: _Gathering, routine: str, bounds: tuple[datetime, datetime], scope: str | None = ""
) -> list[Used]:
    """Every result of ``routine`` in ``[start, end)`` (and not after ``now``), marked as used; runs that could
    not complete (``error``, no items) are said in a note."""
    start, end = bounds
    stored = store.results_between(routine, start, min(end, g.now + timedelta(microseconds=1)), scope=scope)
    for pair in stored:
        g.use(routine, pair)
    incomplete = sum(1 for _, result in stored if result.error)
    if incomplete:
        label = f"{start.astimezone(g.config.tzinfo):%Y-%m}"
        g.notes.append(f"{incomplete} {routine} run(s) in {label} could not complete (status error, no items)")
    return stored


def _latest(store: OpsStore, g: _Gathering, routine: str, bounds: tuple[datetime, datetime], month: str) -> Used | None:
    """The latest result of ``routine`` before the month's end (and not after ``now``), marked as used."""
    start, end = bounds
    latest = _latest_before(store, routine, min(end, g.now + timedelta(microseconds=1)))
    if latest is None:
        g.notes.append(f"no {routine} result stored by the end of {month}: run `opsflow run {routine}`")
        return None
    if latest[1].as_of < start:
        g.notes.append(f"the latest {routine} result is from before {month} ({latest[1].as_of:%Y-%m-%d %H:%M}Z)")
    g.use(routine, latest)
    return latest


def _missing_notes(
    g: _Gathering, month: str, backup_runs: list[Used], drills: list[DrillMonth], quality: list[QualityTable]
) -> None:
    if not backup_runs:
        g.notes.append(f"no backup-verification result stored for {month}")
    else:
        g.notes.append(
            "objects verified: the runs that verified each set (ok or warn); the stored results do not "
            "count the objects a run verified"
        )
    if not drills:
        g.notes.append("no drill ran this month")
    if not quality:
        g.notes.append(f"no data-quality result stored for {month}")


def gather_month(store: OpsStore, config: Config, month: str, now: datetime, revision: int = 1) -> MonthReport:
    """The monthly report of ``month`` (``YYYY-MM``, in ``config.timezone``) from the results stored by ``now``.

    Reads only stored results (see the module docstring for which); never raises for missing data: an empty
    section and a note instead. ``month`` that is not a month raises ValueError. ``revision`` is the caller's
    (1 for the first report of the month). ``generated_at`` is ``now``.
    """
    zone = config.tzinfo
    bounds = month_bounds(month, zone)
    before = month_bounds(previous_month(month), zone)
    g = _Gathering(config, now.astimezone(UTC))
    services, last_items = _services(store, g, month, bounds)
    services = with_incident_records(services, list_incidents(store, start=bounds[0], end=bounds[1], now=g.now))
    backup_runs = _in_month(store, g, "backup-verification", bounds)
    backups = _backups(backup_runs, zone)
    drills = _drills(_in_month(store, g, "dr-drill", bounds, scope=None))
    quality = _quality(_in_month(store, g, "data-quality", bounds))
    then = (
        _backups(_in_month(store, g, "backup-verification", before), zone),
        _drills(_in_month(store, g, "dr-drill", before, scope=None)),
    )
    trends = _latest(store, g, "capacity-trends", bounds, month)
    capacity = _capacity(store, g, trends) if trends else []
    expiry = _latest(store, g, "expiry-check", bounds, month)
    expiring = _expiring(expiry[1], bounds[1], g) if expiry else []
    _missing_notes(g, month, backup_runs, drills, quality)
    sections = {
        "services": services,
        "backups": backups,
        "drills": drills,
        "capacity": capacity,
        "quality": quality,
        "expiring": expiring,
    }
    sources, digest = _sources(g.used)
    extra: dict[str, Any] = {"objects_verified_basis": "runs", "capacity_fit": "not stored"}
    if expiry:
        extra["expiry_horizon_days"] = expiry_horizon_days(expiry[1].as_of, bounds[1], zone)
    return MonthReport(
        month=month,
        timezone=config.timezone,
        start=bounds[0],
        end=bounds[1],
        generated_at=g.now,
        revision=revision,
        summary=_summary(sections),
        changes=_changes(services, last_items, (backups, drills), then),
        sources=sources,
        digest=digest,
        rules=sla_rules(),
        notes=g.notes,
        extra=extra,
        **sections,
    )


# -- task -------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="gather[{month}]")
def gather_task(store: OpsStore, config: Config, month: str, now: datetime, revision: int) -> MonthReport:
    return gather_month(store, config, month, now, revision)
