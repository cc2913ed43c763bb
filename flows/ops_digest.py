"""Ops digest — every morning (yesterday) and every Monday (last week): what the on-call team must know.

Per routine: its runs by status in the period, its latest status and what is failing, and the
**dead-schedule check** ``ran`` — a routine with something configured whose schedule fired in the
period (on the Prefect server when registered there, else in ``prefect.yaml``) but that recorded no
run is a ``fail``, the failure no per-run alert can catch. Plus incidents opened, closed and open
(with their durations), backup objects verified, drills with RTO/RPO, what expires within
``expiry.warn_within``, capacity metrics whose runway shortened, and each service's SLO error
budget so far this month; the weekly digest adds per-service availability and latency p95 week
over week.

Delivered as one Slack message and one HTML email (``digests.daily`` for a day, ``digests.weekly``
for a week; nothing where that is not configured), each a task run with retries; a delivery that
does not land is the item ``digest-delivery``'s ``error``. The digest never pages: its findings are
alerts of their own routines already. Artifact ``ops-digest-<day|week>``.

Schedule (``prefect.yaml``, at ``digests.daily.at`` and ``digests.weekly.day``/``at`` in the config's
``timezone``): ``daily`` (period ``day``) and ``weekly`` (period ``week``). Needs: the ops store; the
Prefect API for the registered schedules; SMTP and the Slack webhook to deliver.

    opsflow run ops-digest [--period day|week|YYYY-MM|FROM..TO] [--as-of ...] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows._routine import AsOf, ConfigPath, Routine, RoutineRun, Work, run_routine
from opsflow.config import Config
from opsflow.digest import Digest
from opsflow.errors import UsageError
from opsflow.prefect_yaml import schedules_by_flow
from opsflow.results import Item, RoutineResult
from opsflow.results import Period as ResultPeriod
from opsflow.status import status_page_path
from reports.digest import digest_email, digest_markdown, digest_slack, digest_subject
from tasks import digest as gather
from tasks.notify import prefect_ui_url
from tasks.periods import Period, PeriodError, parse_period, previous_period
from tasks.routine import settle
from tasks.sla import compute_sla_task

DigestPeriod = Annotated[
    str, Field(description="day (yesterday), week (last ISO week), month, YYYY-MM or FROM..TO (TO exclusive).")
]


def digest_of_period(run: RoutineRun) -> Work:
    config, now = run.config, run.now
    period = parse_period(run.params["period"], now, config.tzinfo)
    routines = routine_names()
    stored = gather.read_stored_task(run.store, routines, period, now)
    sources = gather.schedule_sources(registered_schedules(routines), yaml_schedules(config), stored.store_since)
    digest = build_digest(run, period, routines, stored, sources)
    items = gather.digest_items(digest, config.expiry.warn_within / 86400)
    if run.what_if:
        delivered: list[str] = []  # SPEC §7: a what-if sends nothing
    else:
        delivered, problems = gather.deliver(config, period, digest, render)
        if problems:
            items.append(Item(name=gather.DELIVERY_ITEM, checks=problems))
    work = Work(
        items=items,
        key=f"ops-digest-{period.kind if period.kind in ('day', 'week') else 'custom'}",
        scope=period.label,
        period=ResultPeriod(label=period.label, start=period.start, end=period.end),
        report=digest_markdown(digest),
    )
    if delivered:
        work.outputs["delivered"] = ", ".join(delivered)
    return work


def build_digest(
    run: RoutineRun, period: Period, routines: list[str], stored: gather.Stored, sources: Mapping[str, Any]
) -> Digest:
    config = run.config
    incidents, opened, closed, open_now = gather.incident_lines(stored.incidents, period)
    month = gather.month_to_date(period, config.tzinfo)
    budget, trends = [], []
    if config.services:
        budget = gather.budget_lines(sla_of(run, month))
        if period.kind == "week":
            trends = gather.trend_lines(sla_of(run, period), sla_of(run, previous_period(period, config.tzinfo)))
    return Digest(
        kind=gather.digest_kind(period),
        label=period.label,
        start=period.start,
        end=period.end,
        timezone=config.timezone,
        generated_at=run.now,
        routines=gather.routine_lines(
            routines, gather.configured_routines(config), stored.counts, stored.latest, sources, period
        ),
        incidents=incidents,
        opened=opened,
        closed=closed,
        open_now=open_now,
        backups_verified=stored.backups_verified,
        drills=gather.drill_lines(stored.drills),
        expiring=gather.expiring_lines(stored.expiry),
        runway=gather.runway_lines(stored.capacity_now, stored.capacity_before),
        budget=budget,
        budget_label=month.label,
        trends=trends,
        ui_url=prefect_ui_url(),
        status_page=str(page) if (page := status_page_path()).exists() else None,
    )


def sla_of(run: RoutineRun, period: Period) -> dict[str, dict[str, Any]]:
    """Every service's SLA figures for ``period`` (the SLA report's own computation)."""
    return compute_sla_task.with_options(task_run_name=f"sla[{period.label}]")(run.store, run.config, period)


def registered_schedules(routines: list[str]) -> dict[str, gather.ScheduleSource]:
    """The server's schedules; prefect.yaml's stand in when the server cannot be read (the digest goes on)."""
    payload, error = settle(gather.registered_schedules_task.submit(routines))
    return {} if error is not None else payload


def yaml_schedules(config: Config) -> dict[str, list[dict[str, Any]]]:
    return schedules_by_flow(timezone=config.timezone, digests=config.digests)


def render(digest: Digest) -> tuple[str, str, str, dict[str, Any]]:
    html, text = digest_email(digest)
    return digest_subject(digest), html, text, digest_slack(digest)


def routine_names() -> list[str]:
    """Every routine of ``opsflow run`` and ``dr-drill`` (SPEC §5), in that order."""
    from flows.registry import OTHER_FLOWS, ROUTINES

    return [*ROUTINES, *OTHER_FLOWS]


def check_digest_period(config: Config, params: Mapping[str, Any], now: datetime) -> None:
    try:
        parse_period(params.get("period", "day"), now, config.tzinfo)
    except PeriodError as exc:
        raise UsageError(f"--period: {exc}") from None


def no_pages(run: RoutineRun, result: RoutineResult) -> RoutineResult:
    """The digest never pages: what it finds is already an alert of the routine that found it."""
    return RoutineResult(routine=result.routine, as_of=result.as_of, flow_run_id=result.flow_run_id, items=[])


ROUTINE = Routine(
    name="ops-digest",
    description="The day's or week's operations digest: runs, failures, dead schedules, incidents, expiries.",
    work=digest_of_period,
    alert_view=no_pages,
    preflight=check_digest_period,
)


@flow(name=ROUTINE.name, description=ROUTINE.description)
def ops_digest(period: DigestPeriod = "day", as_of: AsOf = None, config_path: ConfigPath = None) -> State[Any]:
    return run_routine(ROUTINE, as_of, config_path, {"period": period})
