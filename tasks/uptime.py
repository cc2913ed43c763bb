"""The uptime-probe routine's steps: probe, store (or spool), track incidents, judge each service.

>>> outcomes = probe_services(config.services)                   # doctest: +SKIP
>>> written = store_probe_results(store, outcomes, spool)        # doctest: +SKIP
>>> items = track_incidents(store, config, outcomes)             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config, Service
from opsflow.embedded import home_dir
from opsflow.results import Check, Item
from opsflow.spool import ProbeSpool
from opsflow.store import ImportCount, OpsStore
from opsflow.units import format_duration
from tasks.incidents import IncidentEvent, ServiceState, advance, in_maintenance
from tasks.probes import ProbeOutcome, outcome_metrics, probe_all
from tasks.retry import IO_RETRIES


def probe_spool() -> ProbeSpool:
    """The spool under ``$OPSFLOW_HOME`` (default ``./.opsflow``)."""
    return ProbeSpool(home_dir() / "spool" / "probe_results.jsonl")


def maintenance_windows(config: Config, service: str) -> list[tuple[datetime, datetime, str]]:
    return [(w.start, w.end, w.reason) for w in config.maintenance if service in w.services]


def service_item(
    service: Service,
    outcome: ProbeOutcome,
    state: ServiceState,
    event: IncidentEvent | None,
    maintenance: str | None,
) -> Item:
    """Checks ``probe`` (down is ``fail``; ``warn`` inside maintenance), ``tls`` and ``incident``."""
    checks: list[Check] = []
    if outcome.ok:
        latency = f"{outcome.latency_ms:.0f}ms" if outcome.latency_ms is not None else "up"
        detail = f"HTTP {outcome.status_code} in {latency}" if outcome.status_code else f"connected in {latency}"
        checks.append(Check(check="probe", status="ok", detail=detail, observed=outcome.latency_ms))
    else:
        status = "warn" if maintenance is not None else "fail"
        suffix = f" (in maintenance: {maintenance})" if maintenance is not None else ""
        checks.append(
            Check(check="probe", status=status, detail=f"{outcome.error}{suffix}", observed=outcome.status_code)
        )
    if outcome.tls_days_left is not None:
        days = outcome.tls_days_left
        limit_days = service.tls_expiry_warn / 86400
        if days <= 0:
            tls = Check(check="tls", status="fail", detail="the certificate has expired", observed=round(days, 2))
        elif days < limit_days:
            tls = Check(
                check="tls",
                status="warn",
                detail=f"the certificate expires in {days:.1f} days, "
                f"warning under {format_duration(service.tls_expiry_warn)}",
                observed=round(days, 2),
                expected=limit_days,
            )
        else:
            tls = Check(
                check="tls", status="ok", detail=f"the certificate expires in {days:.0f} days", observed=round(days, 2)
            )
        checks.append(tls)
    if state.incident_open:
        assert state.incident_opened_at is not None
        opened = "opened now" if event and event.kind == "opened" else "open"
        checks.append(
            Check(
                check="incident",
                status="fail",
                detail=f"incident {opened} since "
                f"{state.incident_opened_at.isoformat()} after {state.consecutive_failures} "
                "consecutive failures",
            )
        )
    else:
        closed = f"; incident since {event.opened_at.isoformat()} closed" if event and event.kind == "closed" else ""
        checks.append(
            Check(
                check="incident",
                status="ok",
                detail=f"{state.consecutive_failures} consecutive failures, threshold "
                f"{service.failure_threshold}{closed}",
            )
        )
    return Item(name=service.name, checks=checks, metrics=outcome_metrics(outcome, state.incident_open))


@dataclass(frozen=True)
class IncidentUpdate:
    items: list[Item]
    events: list[IncidentEvent]


def judge_services(
    config: Config, outcomes: Sequence[ProbeOutcome], previous: dict[str, ServiceState]
) -> tuple[list[ServiceState], IncidentUpdate]:
    """Advance every service's incident state by its probe; build the items."""
    services = {s.name: s for s in config.services}
    states: list[ServiceState] = []
    items: list[Item] = []
    events: list[IncidentEvent] = []
    for outcome in outcomes:
        service = services[outcome.service]
        windows = maintenance_windows(config, service.name)
        reason = next((r or "maintenance" for s, e, r in windows if s <= outcome.checked_at < e), None)
        before = previous.get(service.name) or ServiceState(service=service.name)
        spans = [(s, e) for s, e, _ in windows]
        state, event = advance(
            before, outcome.checked_at, outcome.ok, service.failure_threshold, in_maintenance(spans, outcome.checked_at)
        )
        states.append(state)
        if event is not None:
            events.append(event)
        items.append(service_item(service, outcome, state, event, reason))
    return states, IncidentUpdate(items, events)


# -- tasks ------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE, task_run_name="probe-services")
def probe_services(services: list[Service], deadline: float | None = None) -> list[ProbeOutcome]:
    """Probe every service at once. Not retried: a probe's result is a measurement, failure included."""
    return asyncio.run(probe_all(services, deadline))


def write_with_spool(
    store: OpsStore,
    outcomes: Sequence[ProbeOutcome],
    spool: ProbeSpool,
    written: list[tuple[str, datetime]] | None = None,
) -> ImportCount:
    """Write earlier spooled results and these in one COPY; the spool empties only after the commit.
    ``written`` collects ``(service, checked_at)`` of every row written (the SLA rollups follow them)."""
    with spool.pending() as spooled:
        rows = [*spooled, *(o.row() for o in outcomes)]
        count = store.write_probe_results(rows)
        if written is not None:
            written.extend((r.service, r.checked_at) for r in rows)
        return count


@task(**IO_RETRIES, cache_policy=NO_CACHE)
def store_probe_results(store: OpsStore, outcomes: list[ProbeOutcome]) -> list[tuple[str, datetime]]:
    """Write the results (and spooled ones); return ``(service, checked_at)`` of every row written."""
    written: list[tuple[str, datetime]] = []
    write_with_spool(store, outcomes, probe_spool(), written)
    return written


@task(cache_policy=NO_CACHE)
def spool_probe_results(outcomes: list[ProbeOutcome]) -> int:
    """The store is unreachable: keep the results on local disk for the next run. Local I/O, not retried."""
    probe_spool().append([o.row() for o in outcomes])
    return len(outcomes)


@task(**IO_RETRIES, cache_policy=NO_CACHE)
def track_incidents(store: OpsStore, config: Config, outcomes: list[ProbeOutcome]) -> list[Item]:
    """Advance incident state in the store by this run's probes; return each service's item."""
    previous = {
        name: ServiceState(
            service=name,
            consecutive_failures=row["consecutive_failures"],
            first_failure_at=row["first_failure_at"],
            incident_opened_at=row["incident_opened_at"],
        )
        for name, row in store.probe_states().items()
    }
    states, update = judge_services(config, outcomes, previous)
    checked = {o.service: o for o in outcomes}
    store.save_probe_states(
        [
            {
                "service": s.service,
                "consecutive_failures": s.consecutive_failures,
                "first_failure_at": s.first_failure_at,
                "last_checked_at": checked[s.service].checked_at,
            }
            for s in states
        ],
        [
            {"service": e.service, "opened_at": e.opened_at, "last_error": checked[e.service].error}
            for e in update.events
            if e.kind == "opened"
        ],
        [{"service": e.service, "closed_at": e.at} for e in update.events if e.kind == "closed"],
    )
    return update.items
