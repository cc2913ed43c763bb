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

    opsflow run uptime-probe [--shard K/N] [--json]

Shards (``--shard K/N``, flow parameters ``shard`` and ``shards``): run ``K`` of ``N`` probes, stores,
tracks incidents and alerts only the services ``opsflow.shards`` puts in it (a stable hash of the
name), so the ``N`` runs of one minute — on as many workers — probe every service exactly once. Each
shard stores its result under the scope ``shard K/N``, publishes under ``uptime-probe-shard-K-of-N``
and spools to a file of its own (``probe_results.shard-K-of-N.jsonl``): a shard replays only what it
spooled, and tracks incidents only of its own services.
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from prefect import flow
from prefect.states import State
from prefect.utilities.annotations import quote
from pydantic import Field

from flows._routine import AsOf, ConfigPath, Routine, RoutineRun, Work, reason, run_routine
from opsflow.config import Config
from opsflow.errors import RoutineIncomplete, StoreUnavailable
from opsflow.results import Item, RoutineResult
from opsflow.shards import check_shard, in_shard, shard_key, shard_label
from opsflow.spool import ProbeSpool
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


ShardParam = Annotated[
    int,
    Field(ge=1, description="Probe only shard K (1..shards) of the services, split by a stable hash of their name."),
]
ShardsParam = Annotated[
    int, Field(ge=1, description="How many shards the services are split into; 1 probes every service in one run.")
]


def probe_and_track(run: RoutineRun) -> Work:
    shard, shards = shard_params(run.params)
    config = shard_config(run.config, shard, shards)  # this shard's services: probed, stored, tracked, alerted
    spool = shard_spool(run.resources.spool, shard, shards)
    outcomes = probe(config)
    stored = store_or_spool(run, outcomes, spool)
    # Large arguments are quoted: Prefect does not walk them looking for futures (at 5,000 services a shard
    # that walk cost seconds a run; none of them holds a future).
    # The SLA report's hourly rollups of the hours these results (spooled ones included) touch.
    refresh_rollups_task(run.store, quote(config), quote(stored.written))
    # Incidents see every result in time order: the spooled ones first, then this run's.
    items = track_incidents(run.store, quote(config), quote(outcomes), quote(stored.spooled))
    key = f"{ROUTINE.name}-{shard_key(shard, shards)}" if shards > 1 else None
    return Work(items=items, key=key, scope=shard_label(shard, shards))


def shard_params(params: Mapping[str, Any]) -> tuple[int, int]:
    """``(shard, shards)`` of a run (1/1 when not given); a bad pair is ``UsageError`` (exit 2, or the run's reason)."""
    return check_shard(params.get("shard", 1), params.get("shards", 1), option="shard")


def shard_config(config: Config, shard: int, shards: int) -> Config:
    """The config as shard ``shard`` of ``shards`` sees it: only its services (the rest unchanged)."""
    if shards == 1:
        return config
    return config.model_copy(update={"services": in_shard(config.services, shard, shards, key=lambda s: s.name)})


def shard_spool(spool: ProbeSpool, shard: int, shards: int) -> ProbeSpool:
    """The shard's own spool beside ``spool`` (``probe_results.shard-2-of-4.jsonl``): what a shard spooled
    is replayed by that shard, whose incident tracking it belongs to."""
    if shards == 1:
        return spool
    stem = spool.path.name.removesuffix(".jsonl")
    return ProbeSpool(spool.path.with_name(f"{stem}.{shard_key(shard, shards)}.jsonl"))


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
            quote(batch),
            deadline,
            in_flight,
            batch_label(batch),
            quote({s.name: windows[s.name] for s in batch}),
            quote(ProbeHeaders({s.name: headers[s.name] for s in batch if s.name in headers})),
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


def store_or_spool(run: RoutineRun, outcomes: list[ProbeOutcome], spool: ProbeSpool | None = None) -> StoredResults:
    """Write the results (spooled ones first); when the store cannot take them, spool them and stop (exit 3)."""
    spool = spool if spool is not None else run.resources.spool
    try:
        return store_probe_results(run.store, quote(outcomes), spool)
    except Exception as exc:
        spool.append([o.row() for o in outcomes])
        raise StoreUnavailable(
            f"{len(outcomes)} probe results spooled for the next run; the ops store could not take them: {reason(exc)}"
        ) from None


def check_shard_params(config: Config, params: Mapping[str, Any], now: datetime) -> None:
    shard_params(params)


def incidents_and_burn_rates(run: RoutineRun, result: RoutineResult) -> RoutineResult:
    """Alerts follow incidents and certificate expiry, plus the multiwindow burn rates (a page rule
    is a fail, the ticket rule a warn) — not every failed probe."""
    burning = burn_rate_checks(run.store, shard_config(run.config, *shard_params(run.params)), run.now)
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
    preflight=check_shard_params,
)


@flow(name=ROUTINE.name, description=ROUTINE.description)
def uptime_probe(
    as_of: AsOf = None, config_path: ConfigPath = None, shard: ShardParam = 1, shards: ShardsParam = 1
) -> State[Any]:
    return run_routine(ROUTINE, as_of, config_path, {"shard": shard, "shards": shards})
