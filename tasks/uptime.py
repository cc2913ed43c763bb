"""The uptime-probe routine's steps: probe, store (or spool), track incidents, judge each service.

The flow (``flows/uptime_probe.py``) runs one ``probe[…]`` task run per service or batch
(:func:`probe_batches`), writes every result in one COPY (``write[probe-results]``), or
spools them when the store fails, then advances incidents (``incidents[…]``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import Config, Service
from opsflow.history_csv import ProbeRow
from opsflow.results import Check, Item
from opsflow.spool import ProbeSpool
from opsflow.store import ImportCount, OpsStore, ProbeStateChanges
from opsflow.units import format_duration, format_local_time
from tasks.incidents import IncidentEvent, ServiceState, advance, in_maintenance
from tasks.probes import ProbeHeaders, ProbeOutcome, outcome_metrics, probe_all
from tasks.retry import IO_RETRIES
from tasks.routine import finding_state

log = logging.getLogger(__name__)


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
    headers: ProbeHeaders | None = None,
) -> list[ProbeOutcome] | State[list[ProbeOutcome]]:
    """Probe a batch at once; Failed naming the services that are down. Not retried: a probe's result
    is a measurement, a failure included. ``headers``: the batch's headers, secrets resolved once for the
    run by the flow (:func:`tasks.probes.resolve_probe_headers`)."""
    outcomes = asyncio.run(probe_all(services, deadline, max_in_flight, headers))
    return finding_state(outcomes, down(outcomes, maintenance))


#: What PostgreSQL says of a row it will never take (a NUL in text, a number out of range), not of the store.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


def write_rows(store: OpsStore, rows: Sequence[ProbeRow]) -> tuple[int, list[tuple[ProbeRow, str]]]:
    """Write ``rows`` in one COPY; when PostgreSQL refuses a row itself, halve the batch until the rows it
    refuses are found. Return how many rows were new, and the refused rows with the reason."""
    try:
        return store.write_probe_results(rows).inserted, []
    except ROW_ERRORS as exc:
        if len(rows) == 1:
            return 0, [(rows[0], f"{type(exc).__name__}: {str(exc).strip()}"[:500])]
    middle = len(rows) // 2
    first, refused_first = write_rows(store, rows[:middle])
    second, refused_second = write_rows(store, rows[middle:])
    return first + second, refused_first + refused_second


def write_with_spool(
    store: OpsStore,
    outcomes: Sequence[ProbeOutcome],
    spool: ProbeSpool,
    written: list[tuple[str, datetime]] | None = None,
    spooled_written: list[ProbeRow] | None = None,
) -> ImportCount:
    """Write earlier spooled results and these in one COPY; the spool empties only after the commit.
    ``written`` collects ``(service, checked_at)`` of every row written (the SLA rollups follow them),
    ``spooled_written`` the spooled rows written (incidents follow them). A row PostgreSQL will never
    take is set aside beside the spool (:meth:`ProbeSpool.reject`) with a WARNING; the rest are written."""
    with spool.pending() as spooled:
        rows = [*spooled, *(o.row() for o in outcomes)]
        inserted, refused = write_rows(store, rows)
        if refused:
            spool.reject(refused)
            log.warning(
                "%d probe result%s the ops store refused set aside in %s (the first: %s)",
                len(refused),
                "" if len(refused) == 1 else "s",
                spool.rejected_path,
                refused[0][1],
            )
            kept = {id(row) for row in rows} - {id(row) for row, _ in refused}
            rows = [r for r in rows if id(r) in kept]
            spooled = [r for r in spooled if id(r) in kept]
        if written is not None:
            written.extend((r.service, r.checked_at) for r in rows)
        if spooled_written is not None:
            spooled_written.extend(spooled)
        return ImportCount(rows=len(rows) + len(refused), inserted=inserted)


@dataclass(frozen=True)
class StoredResults:
    written: list[tuple[str, datetime]]  # (service, checked_at) of every row written: the SLA rollups follow them
    spooled: list[ProbeRow]  # the spooled rows among them: incidents see them before this run's results


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="write[probe-results]")
def store_probe_results(store: OpsStore, outcomes: list[ProbeOutcome], spool: ProbeSpool) -> StoredResults:
    """Write the results (and spooled ones); return what was written, and which spooled rows."""
    stored = StoredResults([], [])
    write_with_spool(store, outcomes, spool, stored.written, stored.spooled)
    return stored


def replay_spooled(
    config: Config, spooled: Sequence[ProbeRow], previous: dict[str, ServiceState], last_checked: dict[str, datetime]
) -> tuple[dict[str, ServiceState], list[tuple[IncidentEvent, ProbeRow]]]:
    """Advance each service's state over results spooled during a store outage, in time order, before this
    run's (SPEC §7): an incident opens at its spooled time. Rows already counted (not after the service's
    ``last_checked``) and of services no longer configured are skipped. Return the states, and each event
    with the row it happened at."""
    services = {s.name: s for s in config.services}
    states = dict(previous)
    events: list[tuple[IncidentEvent, ProbeRow]] = []
    for row in sorted(spooled, key=lambda r: r.checked_at):
        service = services.get(row.service)
        last = last_checked.get(row.service)
        if service is None or (last is not None and row.checked_at <= last):
            continue
        spans = [(s, e) for s, e, _ in maintenance_windows(config, service.name)]
        before = states.get(service.name) or ServiceState(service=service.name)
        state, event = advance(
            before, row.checked_at, row.ok, service.failure_threshold, in_maintenance(spans, row.checked_at)
        )
        states[service.name] = state
        last_checked[service.name] = row.checked_at
        if event is not None:
            events.append((event, row))
    return states, events


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="incidents[all services]")
def track_incidents(
    store: OpsStore, config: Config, outcomes: list[ProbeOutcome], spooled: Sequence[ProbeRow] = ()
) -> list[Item]:
    """Advance incident state in the store by the spooled results (in time order), then this run's probes;
    return each service's item. The read, the advance and the write are one transaction under the store's
    probe-state lock (:meth:`OpsStore.update_probe_states`): two probe runs at once take turns."""
    items: list[Item] = []

    def update(stored: dict[str, dict[str, Any]]) -> ProbeStateChanges:
        changes, update = advance_incidents(config, outcomes, spooled, stored)
        items[:] = update.items
        return changes

    store.update_probe_states(update)
    return items


def advance_incidents(
    config: Config, outcomes: Sequence[ProbeOutcome], spooled: Sequence[ProbeRow], stored: dict[str, dict[str, Any]]
) -> tuple[ProbeStateChanges, IncidentUpdate]:
    """The stored probe states advanced by the spooled results, then by ``outcomes``: what to store
    (``states, opened, closed``) and each service's item."""
    previous = {
        name: ServiceState(
            service=name,
            consecutive_failures=row["consecutive_failures"],
            first_failure_at=row["first_failure_at"],
            incident_opened_at=row["incident_opened_at"],
        )
        for name, row in stored.items()
    }
    last_checked = {name: row["last_checked_at"] for name, row in stored.items() if row.get("last_checked_at")}
    previous, replayed = replay_spooled(config, spooled, previous, last_checked)
    states, update = judge_services(config, outcomes, previous)
    checked = {o.service: o for o in outcomes}
    events = [*replayed, *((e, checked[e.service].row()) for e in update.events)]
    # An incident opened and closed within these results is stored closed; the one still open at the
    # start (at most one per service) is closed by ``closed``.
    opened: dict[tuple[str, datetime], dict[str, object]] = {}
    closed: list[dict[str, object]] = []
    for event, row in events:
        if event.kind == "opened":
            opened[(event.service, event.opened_at)] = {
                "service": event.service,
                "opened_at": event.opened_at,
                "closed_at": None,
                "last_error": row.error,
            }
        elif (event.service, event.opened_at) in opened:
            opened[(event.service, event.opened_at)]["closed_at"] = event.at
        else:
            closed.append({"service": event.service, "closed_at": event.at})
    states_rows = [
        {
            "service": s.service,
            "consecutive_failures": s.consecutive_failures,
            "first_failure_at": s.first_failure_at,
            "last_checked_at": checked[s.service].checked_at,
        }
        for s in states
    ]
    return (states_rows, list(opened.values()), closed), update
