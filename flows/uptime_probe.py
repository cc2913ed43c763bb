"""Uptime probe — every minute: is every service up, and how fast?

Probes every service in ``opsflow.yaml`` (``services:``) at once in one task
run (HTTP(S) status, body, latency and certificate expiry; TCP connects), writes
every result to the ops store in one COPY — or, when the store is unreachable,
to a local spool written first by the next run, so no result is lost — then
opens and closes incidents (``failure_threshold`` consecutive failures open
one; the next success closes it) and alerts on them.

Schedule: every 60 s (``prefect.yaml``). Needs: the ops store, network reach
to the services. Result: stored, alerted (incidents page, certificate expiry
warns), published under the artifact key ``uptime-probe``; the run ends
Failed when a service is down.

    opsflow run uptime-probe [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment), and string
# annotations (``AsOf``, ``ConfigPath``...) cannot be resolved there: every scheduled run would fail
# its parameter validation.

from typing import Any

from prefect import flow
from prefect.states import State

from flows._routine import AsOf, ConfigPath, current_flow_run_id, finish, resolve_now
from opsflow.errors import StoreUnavailable
from opsflow.results import Item, RoutineResult
from tasks.routine import load_routine_config, open_store
from tasks.sla import burn_rate_checks, refresh_rollups_task
from tasks.uptime import probe_services, spool_probe_results, store_probe_results, track_incidents

ROUTINE = "uptime-probe"
ALERTING_CHECKS = ("incident", "tls")  # plus burn_rate, added below


@flow(name=ROUTINE, description="Probe every service; store every result; open and close incidents.")
def uptime_probe(as_of: AsOf = None, config_path: ConfigPath = None) -> State[Any]:
    config = load_routine_config(config_path)
    outcomes = probe_services(config.services)
    opened = open_store(config, return_state=True)
    if not opened.is_completed():
        spooled = spool_probe_results(outcomes)
        raise StoreUnavailable(f"ops store unreachable: {spooled} probe results spooled for the next run")
    store = opened.result()
    written = store_probe_results(store, outcomes)
    # The SLA report's hourly rollups of the hours these results (spooled ones included) touch.
    refresh_rollups_task(store, config, written)
    items = track_incidents(store, config, outcomes)
    now = resolve_now(as_of)
    result = RoutineResult(routine=ROUTINE, as_of=now, flow_run_id=current_flow_run_id(), items=items)
    # Pages follow incidents (failure_threshold) and certificate expiry, not every failed probe.
    # Error-budget burn rates (SRE workbook multiwindow): a page rule is a fail (pages), the ticket rule a warn.
    burning = burn_rate_checks(store, config, now)
    alert_items = [
        Item(
            name=i.name,
            checks=[c for c in i.checks if c.check in ALERTING_CHECKS]
            + ([burning[i.name]] if i.name in burning else []),
        )
        for i in items
    ]
    alert_view = RoutineResult(routine=ROUTINE, as_of=now, flow_run_id=result.flow_run_id, items=alert_items)
    return finish(result, config, store, key=ROUTINE, alert_on=alert_view)
