"""The uptime-probe routine's steps: probe, store (or spool), track incidents, judge each service.

The flow (``flows/uptime_probe.py``) runs one ``probe[…]`` task run per service or batch
(:func:`probe_batches`), writes every result in one COPY (``write[probe-results]``), or
spools them when the store fails, then advances incidents (``incidents[…]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import Config, Service
from opsflow.results import Check, Item
from opsflow.spool import ProbeSpool
from opsflow.store import ImportCount, OpsStore
from opsflow.units import format_duration, format_local_time
from tasks.incidents import IncidentEvent, ServiceState, advance, in_maintenance
from tasks.probes import ProbeOutcome, outcome_metrics, probe_all
from tasks.retry import IO_RETRIES
from tasks.routine import finding_state


def maintenance_windows(config: Config, service: str) -> list[tuple[datetime, datetime, str]]:
    return [(w.start, w.end, w.reason) for w in config.maintenance if service in w.services]


def service_item(
    service: Service,
    outcome: ProbeOutcome,
    state: ServiceState,
    event: IncidentEvent | None,
    maintenance: str | None,
    zone: tzinfo = UTC,
) -> Item:
    """Checks ``probe`` (down is ``fail``; ``warn`` inside maintenance), ``tls`` and ``incident``; times in
    details are read in ``zone`` (the config's timezone), to the second."""
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
    if state.incident_opened_at is not None:  # the incident is open
        opened = "opened now" if event and event.kind == "opened" else "open"
        checks.append(
            Check(
                check="incident",
                status="fail",
                detail=f"incident {opened} since "
                f"{format_local_time(state.incident_opened_at, zone)} after {state.consecutive_failures} "
                "consecutive failures",
            )
        )
    else:
        closed = (
            f"; incident since {format_local_time(event.opened_at, zone)} closed"
            if event and event.kind == "closed"
            else ""
        )
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
        items.append(service_item(service, outcome, state, event, reason, config.tzinfo))
    return states, IncidentUpdate(items, events)


# -- tasks ------------------------------------------------------------------------------


#: Up to this many services each get a task run of their own (``probe[api]``); more are probed in this
#: many batches (``probe[api…web (50)]``), so the graph stays readable at a thousand services.
PROBE_TASK_RUNS = 20


def probe_batches(services: Sequence[Service]) -> list[list[Service]]:
    """The services split into at most :data:`PROBE_TASK_RUNS` batches, in config order."""
    size = max(1, -(-len(services) // PROBE_TASK_RUNS))
    return [list(services[i : i + size]) for i in range(0, len(services), size)]


def batch_label(batch: Sequence[Service]) -> str:
    """A batch's task run name: the service, or the first and last with the count."""
    return batch[0].name if len(batch) == 1 else f"{batch[0].name}…{batch[-1].name} ({len(batch)})"


def down(outcomes: Sequence[ProbeOutcome], maintenance: dict[str, list[tuple[datetime, datetime]]]) -> list[str]:
    """``service: error`` of each service found down outside its maintenance windows."""
    return [
        f"{o.service}: {o.error}"
        for o in outcomes
        if not o.ok and not in_maintenance(maintenance.get(o.service, []), o.checked_at)
    ]


@task(cache_policy=NO_CACHE, task_run_name="probe[{label}]")
def probe_task(
    services: list[Service],
    deadline: float,
    max_in_flight: int,
    label: str,
    maintenance: dict[str, list[tuple[datetime, datetime]]],
) -> list[ProbeOutcome] | State[list[ProbeOutcome]]:
    """Probe a batch at once; Failed naming the services that are down. Not retried: a probe's result
    is a measurement, a failure included."""
    outcomes = asyncio.run(probe_all(services, deadline, max_in_flight))
    return finding_state(outcomes, down(outcomes, maintenance))


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


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="write[probe-results]")
def store_probe_results(store: OpsStore, outcomes: list[ProbeOutcome], spool: ProbeSpool) -> list[tuple[str, datetime]]:
    """Write the results (and spooled ones); return ``(service, checked_at)`` of every row written."""
    written: list[tuple[str, datetime]] = []
    write_with_spool(store, outcomes, spool, written)
    return written


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="incidents[all services]")
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
