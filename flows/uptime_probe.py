"""Uptime probe — every minute: is every service up, and how fast?

Probes every service in ``opsflow.yaml`` (``services:``) at once — one task run
``probe[SERVICE]`` per service, or per batch beyond 20 services — (HTTP(S)
status, body, latency and certificate expiry; TCP connects); a task run whose
services are down ends Failed naming them. Every result is written to the ops
store in one COPY — or, when the store cannot take them, to a local spool that
the next run writes first, so no result is lost (the run then exits 3) — then
incidents open and close (``failure_threshold`` consecutive failures open one;
the next success closes it) and alerts follow them.

Schedule: every 60 s (``prefect.yaml``). Needs: the ops store, network reach
to the services. Result: stored, alerted (incidents and burn rates page,
certificate expiry warns), published under the artifact key ``uptime-probe``;
the run ends Failed when a service is down.

    opsflow run uptime-probe [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from flows._routine import Routine, RoutineRun, reason, routine_flow
from opsflow.config import Config
from opsflow.errors import RoutineIncomplete, StoreUnavailable
from opsflow.results import Item, RoutineResult
from tasks.probes import MAX_IN_FLIGHT, ProbeHeaders, ProbeOutcome, resolve_probe_headers, run_deadline
from tasks.routine import settle
from tasks.sla import burn_rate_checks, refresh_rollups_task
from tasks.uptime import (
    StoredResults,
    batch_label,
    maintenance_windows,
    probe_batches,
    probe_task,
    store_probe_results,
    track_incidents,
)

#: The checks alerts are decided on: pages follow incidents (failure_threshold) and certificate expiry,
#: not every failed probe; error-budget burn rates are added per run.
ALERTING_CHECKS = ("incident", "tls")


def probe_and_track(run: RoutineRun) -> list[Item]:
    outcomes = probe(run.config)
    stored = store_or_spool(run, outcomes)
    # The SLA report's hourly rollups of the hours these results (spooled ones included) touch.
    refresh_rollups_task(run.store, run.config, stored.written)
    # Incidents see every result in time order: the spooled ones first, then this run's.
    return track_incidents(run.store, run.config, outcomes, stored.spooled)


def probe(config: Config) -> list[ProbeOutcome]:
    """Every service probed once: the batches' task runs side by side, one in-flight cap in all.

    Secret headers are resolved here, once per run for all the batches (each ``{secret: NAME}`` block
    loaded once), before any probe starts: not per probe inside the event loop, and not cached past
    this run, so the next run sends a rotated secret."""
    services = config.services
    batches = probe_batches(services)
    deadline = run_deadline(services)
    in_flight = max(1, MAX_IN_FLIGHT // max(1, len(batches)))
    windows = {s.name: [(start, end) for start, end, _ in maintenance_windows(config, s.name)] for s in services}
    try:
        headers = resolve_probe_headers(services)
    except Exception as exc:  # a Secret block missing or the API down: the run cannot probe as configured
        raise RoutineIncomplete(f"cannot load the secrets of the probes' headers: {reason(exc)}") from None
    futures = [
        probe_task.submit(
            batch,
            deadline,
            in_flight,
            batch_label(batch),
            {s.name: windows[s.name] for s in batch},
            ProbeHeaders({s.name: headers[s.name] for s in batch if s.name in headers}),
        )
        for batch in batches
    ]
    outcomes: list[ProbeOutcome] = []
    for future in futures:
        payload, error = settle(future)
        if error is not None:
            raise error  # a probe run that crashed is a bug, not a down service: let it show
        outcomes += payload
    return outcomes


def store_or_spool(run: RoutineRun, outcomes: list[ProbeOutcome]) -> StoredResults:
    """Write the results (spooled ones first); when the store cannot take them, spool them and stop (exit 3)."""
    try:
        return store_probe_results(run.store, outcomes, run.resources.spool)
    except Exception as exc:
        run.resources.spool.append([o.row() for o in outcomes])
        raise StoreUnavailable(
            f"{len(outcomes)} probe results spooled for the next run; the ops store could not take them: {reason(exc)}"
        ) from None


def incidents_and_burn_rates(run: RoutineRun, result: RoutineResult) -> RoutineResult:
    """Alerts follow incidents and certificate expiry, plus the multiwindow burn rates (a page rule
    is a fail, the ticket rule a warn) — not every failed probe."""
    burning = burn_rate_checks(run.store, run.config, run.now)
    items = [
        Item(
            name=item.name,
            checks=[c for c in item.checks if c.check in ALERTING_CHECKS]
            + ([burning[item.name]] if item.name in burning else []),
        )
        for item in result.items
    ]
    return RoutineResult(routine=result.routine, as_of=result.as_of, flow_run_id=result.flow_run_id, items=items)


ROUTINE = Routine(
    name="uptime-probe",
    description="Probe every service; store every result; open and close incidents.",
    work=probe_and_track,
    alert_view=incidents_and_burn_rates,
)

uptime_probe = routine_flow(ROUTINE, __name__)
