"""SLA report — daily, weekly (Monday) and monthly (1st): availability, latency, error budget, incidents.

For the period (``day``, ``week``, ``month``, ``YYYY-MM`` or ``FROM..TO`` in the
config's timezone; a named period is the last complete one before ``as_of``),
computes per service in PostgreSQL (``tasks/sla.py``): up/down/maintenance/
no_data seconds, availability and coverage, error budget and what is left of
it, latency p50/p95/p99 of successful probes, incidents and MTTR, and the same
for the previous period of the same length, for comparison. Checks
``availability`` (vs ``slo.availability``), ``latency_p95`` (vs
``slo.latency_p95`` when set) and ``coverage`` (vs ``slo.min_coverage``).

Result: stored under the period's label as scope (and as a new revision in
``opsflow.sla_reports``: a month's earlier reports are kept), a CSV under
``reports/out`` (``reports.monthly.out_dir``; a relative directory is under ``$OPSFLOW_HOME``),
written atomically, markdown + table artifacts under ``sla-report-<period kind>``. Every report
states the rules and the coverage. A CSV that cannot be written is the run's ``error``: an item
``report-output`` whose check ``csv`` says why (exit 1); the result is still stored and alerted.

Schedule (``prefect.yaml``): ``daily`` at 06:00 (yesterday), ``weekly`` on Mondays at 06:30 (last
ISO week), ``monthly`` on the 1st at 07:00 (last month), in the config's ``timezone``
(``opsflow deploy`` and ``opsflow serve`` write it into the schedules). Needs: the ops store.

    opsflow run sla-report --period 2026-10 [--as-of ...] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State
from pydantic import Field

from flows._routine import AsOf, ConfigPath, Routine, RoutineRun, Work, reason, run_routine
from opsflow.config import Config
from opsflow.errors import UsageError
from opsflow.files import output_dir
from opsflow.results import Check, Item, RoutineResult
from opsflow.results import Period as ReportPeriod
from opsflow.retention import prune_after_report
from opsflow.store import OpsStore
from tasks import sla
from tasks.periods import PeriodError, parse_period, previous_period
from tasks.retry import with_retries
from tasks.sla import build_items, compute_sla_task, report_markdown, report_rows, save_revision, write_csv_task

PeriodParam = Annotated[
    str, Field(description="day, week, month, YYYY-MM or FROM..TO (ISO instants or dates, TO exclusive).")
]
OutDir = Annotated[
    str | None,
    Field(
        description="Where the CSV goes; empty means reports.monthly.out_dir or reports/out. "
        "A relative directory is under $OPSFLOW_HOME."
    ),
]
#: The synthetic item a report whose CSV could not be written carries (check ``csv``, status ``error``).
OUTPUT_ITEM = "report-output"


def report_period(run: RoutineRun) -> Work:
    config = run.config
    chosen = parse_period(run.params["period"], run.now, config.tzinfo)
    before = previous_period(chosen, config.tzinfo)
    store = run.store
    current = compute_sla_task.with_options(task_run_name=f"sla[{chosen.label}]")(store, config, chosen)
    previous = compute_sla_task.with_options(task_run_name=f"sla[{before.label}]")(store, config, before)
    work = Work(
        items=build_items(config, current, previous),
        key=f"sla-report-{chosen.kind}",
        scope=chosen.label,
        period=ReportPeriod(label=chosen.label, start=chosen.start, end=chosen.end),
    )
    result = RoutineResult(
        routine=run.routine.name, as_of=run.now, flow_run_id=run.flow_run_id, items=work.items, period=work.period
    )
    target = output_dir(run.params.get("out_dir") or (config.reports.monthly.out_dir if config.reports.monthly else ""))
    written = write_csv_task(result, chosen, str(target), return_state=True)
    if written.is_completed():
        work.outputs["csv"] = written.result()
    else:  # a failed output is this run's error, not the end of the run: the result is still stored and alerted
        why = reason(written.result(raise_on_failure=False)) if written.is_failed() else (written.message or "")
        detail = f"sla-{chosen.kind} CSV not written: {why}"
        work.items.append(Item(name=OUTPUT_ITEM, checks=[Check(check="csv", status="error", detail=detail)]))
    with_retries(lambda: save_revision(store, result, chosen), "save the report revision")
    create_markdown_artifact(
        key=f"{work.key}-report", markdown=report_markdown(result, chosen, config.timezone), description=chosen.label
    )
    create_table_artifact(key=f"{work.key}-table", table=report_rows(result), description=f"SLA {chosen.label}")
    # Raw retention once a day, as plain bookkeeping (not a task run): a failure is one WARNING line.
    if chosen.kind == "day" and not run.what_if:
        prune_after_report(store, config)
    return work


def check_period_param(config: Config, params: Mapping[str, Any], now: datetime) -> None:
    check_period(params.get("period", "day"), now, config)


ROUTINE = Routine(
    name="sla-report",
    description="SLA per service for a period: availability, latency, error budget, incidents.",
    work=report_period,
    preflight=check_period_param,
)


@flow(name=ROUTINE.name, description=ROUTINE.description)
def sla_report(
    period: PeriodParam = "day", as_of: AsOf = None, config_path: ConfigPath = None, out_dir: OutDir = None
) -> State[Any]:
    return run_routine(ROUTINE, as_of, config_path, {"period": period, "out_dir": out_dir})


# -- what the CLI asks of the SLA report outside a flow run ------------------------------------


def check_period(text: str, now: datetime, config: Config) -> None:
    """Refuse a ``--period`` that does not parse (exit 2)."""
    try:
        parse_period(text, now, config.tzinfo)
    except PeriodError as exc:
        raise UsageError(f"--period: {exc}") from None


def rebuild_rollups(config: Config) -> int:
    """``opsflow sla rebuild-rollups``: every configured service's rollups rebuilt from raw rows;
    returns the service-hours written."""
    return sla.rebuild_rollups(OpsStore.open(config), config)


def refresh_rollups_for_rows(store: OpsStore, config: Config, checked: list[tuple[str, datetime]]) -> None:
    """After ``opsflow probes import``: the rollups of the hours the imported rows touch."""
    sla.refresh_rollups_for_rows(store, config, checked)
