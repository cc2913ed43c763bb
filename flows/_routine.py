"""The routine template: every routine is one declaration and this one flow body.

A routine is declared once as a :class:`Routine` — its name, the per-item work, and
optionally its own report, the view its alerts are decided on, a pre-flight check
of its parameters, and where its resources come from. :func:`run_routine` is the
flow body they all share::

    config → resources → work → result → finish (store, alerts, artifacts, why)

- the work gets a :class:`RoutineRun` (config, resources, now, parameters) and
  returns the items (or a :class:`Work` that also names the artifact key, the
  stored scope, a period, files written); each item's task run ends Failed with
  its failing checks (``tasks.routine.item_state``), and :func:`item_of` turns a
  task run that failed for another reason into an ``error`` item;
- :func:`finish` owns the rest: the result is saved, alerts are planned and sent,
  the markdown summary and the checks table are published under a stable key,
  each ``warn`` check is one WARNING line and each ``fail``/``error`` check one
  ERROR line in the run's logs, and the flow run ends Completed or Failed with a
  message naming the failing items and checks (SPEC §1);
- a routine that cannot complete (the ops store down, a bad config at run time)
  ends Failed with the one-line reason and a result whose ``error`` says it.

:func:`routine_flow` makes the Prefect flow of a routine whose parameters are the
standard ones (``as_of``, ``config_path``); a routine with more parameters writes a
one-line ``@flow`` that calls :func:`run_routine`. Bookkeeping (config, store,
saving, alert state) is plain code, not task runs.
"""

# No ``from __future__ import annotations``: the flows built here take their parameter models
# from these signatures where they run (a worker, a served deployment).

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from prefect import Flow, flow, get_run_logger, runtime
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import Field

from opsflow.config import Config, ConfigError, default_config_path, load_config
from opsflow.errors import OpsflowError, UsageError
from opsflow.logs import keep_findings_out_of_engine_errors, reason_extra, send_logs_to_runs
from opsflow.redact import redact
from opsflow.results import Check, Item, Period, RoutineResult
from reports.status import render_status_page
from reports.summary import (
    DeliveryLike,
    checks_table,
    deliveries_markdown,
    escalations_markdown,
    summary_markdown,
    what_if_markdown,
)
from tasks.artifacts import publish_artifacts
from tasks.notify import AlertReport, prefect_ui_url, send_alerts
from tasks.resources import Resources, system_clock
from tasks.retry import with_retries
from tasks.routine import Finding, failing_checks, settle, shorten
from tasks.status_page import refresh_status_page

log = logging.getLogger("opsflow.run")  # the phase lines of a run, on stderr and in the run logs

# Every routine's parameters, described so the Prefect UI renders a form.
AsOf = Annotated[datetime | None, Field(description="Run as if now were this instant (ISO 8601); empty means now.")]
ConfigPath = Annotated[
    str | None, Field(description="opsflow.yaml to use; empty means $OPSFLOW_CONFIG, else ./opsflow.yaml.")
]
# An explicit as_of further than this from the clock is a what-if: no alert, alert state left alone (SPEC §7).
WHAT_IF_AFTER = timedelta(minutes=5)


@dataclass
class Work:
    """What a routine's work returns when it has more to say than its items."""

    items: list[Item]
    key: str | None = None  # artifact key, when not the routine's name (``sla-report-month``)
    scope: str = ""  # what the stored result is about (a period, a database)
    as_of: datetime | None = None  # the routine's own "now" (a drill's start)
    period: Period | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    report: str | None = None  # the run's own markdown report (the digest), instead of the routine's or the summary


@dataclass
class RoutineRun:
    """One run of a routine, as its work sees it.

    ``clock`` is the resources' clock when the run began: ``now`` is that same instant unless the run
    was given an explicit ``as_of``, and a ``now`` more than :data:`WHAT_IF_AFTER` from it makes the run
    a what-if (:attr:`what_if`).
    """

    routine: "Routine"
    config: Config
    resources: Resources
    now: datetime
    flow_run_id: str | None
    params: Mapping[str, Any]
    clock: datetime | None = None

    def __post_init__(self) -> None:
        if self.clock is None:
            self.clock = self.resources.clock()

    @property
    def store(self) -> Any:
        return self.resources.store

    @property
    def what_if(self) -> bool:
        """An explicit ``as_of`` more than 5 minutes from the clock: results and artifacts, no alerts (SPEC §7)."""
        return self.clock is not None and abs(self.now - self.clock) > WHAT_IF_AFTER


@dataclass(frozen=True)
class Routine:
    """A routine, declared once. Only ``name``, ``description`` and ``work`` are required.

    - ``work(run)`` — checks the items, sequencing the routine's tasks; returns items or a :class:`Work`;
    - ``report(result)`` — the routine's own markdown report, published instead of the generic summary;
    - ``alert_view(run, result)`` — the result alerts are decided on, when not the result itself;
    - ``preflight(config, params, now)`` — refuses bad parameters before a flow run exists (raise UsageError);
    - ``resources(config)`` — builds the run's :class:`Resources` (fakes in tests);
    - ``max_concurrency`` — at most this many of its task runs at once.
    """

    name: str
    description: str
    work: Callable[[RoutineRun], "Work | list[Item]"]
    report: Callable[[RoutineResult], str] | None = None
    alert_view: Callable[[RoutineRun, RoutineResult], RoutineResult] | None = None
    preflight: Callable[[Config, Mapping[str, Any], datetime], None] | None = None
    resources: Callable[[Config], Resources] = Resources.from_config
    #: At most this many of its task runs at once (one thread pool of that size); None: Prefect's default,
    #: a thread per task run. Hundreds of items on a small host run faster, and gentler, a few at a time.
    max_concurrency: int | None = None


# -- the flow body ----------------------------------------------------------------------------


def run_routine(
    routine: Routine, as_of: datetime | None, config_path: str | None, params: Mapping[str, Any] | None = None
) -> State[Any]:
    """config → resources → work → result → finish, as the body of the routine's flow run."""
    send_logs_to_runs()
    keep_findings_out_of_engine_errors()
    params = dict(params or {})
    resources: Resources | None = None
    try:
        config = load_routine_config(routine.name, config_path)
        resources = routine.resources(config)
        run = RoutineRun(routine, config, resources, resolve_now(as_of, resources), current_flow_run_id(), params)
        if routine.preflight is not None:
            routine.preflight(config, params, run.now)
        outcome = routine.work(run)
        work = outcome if isinstance(outcome, Work) else Work(items=outcome)
        log.info("%s: checked %s", routine.name, count_items(len(work.items)))
        return finish(run, work)
    except (OpsflowError, ConfigError) as exc:
        return incomplete(routine.name, as_of, exc)
    finally:
        if resources is not None:
            resources.close()


def load_routine_config(routine: str, config_path: str | None) -> Config:
    """The config from ``config_path``, ``$OPSFLOW_CONFIG`` or ``./opsflow.yaml`` (none at all: empty)."""
    path = default_config_path(config_path)
    config = load_config(path, missing_ok=config_path is None)
    log.info("%s: config %s", routine, path if path.exists() else "none (no opsflow.yaml: empty config)")
    return config


def resolve_now(as_of: datetime | None, resources: Resources | None = None) -> datetime:
    """``as_of`` (made timezone-aware, UTC when naive) or the resources' clock."""
    if as_of is None:
        return resources.clock() if resources is not None else system_clock()
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)


def current_flow_run_id() -> str | None:
    run_id = runtime.flow_run.id
    return str(run_id) if run_id else None


def item_of(name: str, future: PrefectFuture[Any], check: str) -> Item:
    """The item a task run checked (a finding included), or an ``error`` item named after ``check``
    when it could not be checked (its retries exhausted)."""
    payload, error = settle(future)
    if error is None:
        return payload  # type: ignore[no-any-return]
    return Item(name=name, checks=[Check(check=check, status="error", detail=f"could not be checked: {reason(error)}")])


def reason(error: BaseException) -> str:
    """An error as one redacted line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return redact(text)


# -- the finish -------------------------------------------------------------------------------


def finish(run: RoutineRun, work: Work) -> State[Any]:
    """Store, alert, publish, say why; the flow run's final state."""
    routine = run.routine
    result = RoutineResult(
        routine=routine.name,
        as_of=work.as_of or run.now,
        flow_run_id=run.flow_run_id,
        items=work.items,
        period=work.period,
        outputs=work.outputs,
    )
    store = run.store
    with_retries(lambda: store.save_result(result, work.scope), "save the result")
    log.info("%s: result stored%s", routine.name, f" ({work.scope})" if work.scope else "")
    page = None if run.what_if else refresh_status(run)  # a what-if's result is not the real latest
    key = work.key or routine.name
    report = work.report if work.report is not None else routine.report(result) if routine.report else None
    if run.what_if:
        # SPEC §7: a what-if neither alerts nor touches the alert state, and its summary says so.
        alerts = AlertReport(alerts=[], deliveries=[])
        report = (report if report is not None else summary_markdown(result)) + what_if_markdown(run.now)
        log.info("%s: what-if run as of %s: no alerts sent, alert state unchanged", routine.name, run.now.isoformat())
    else:
        view = routine.alert_view(run, result) if routine.alert_view is not None else result
        alerts = send_alerts(view, run.config, store)
    if alerts.deliveries:
        log.info("%s: %d alerts sent, %d not delivered", routine.name, len(alerts.deliveries), len(alerts.failed))
    publish_result(result, key, alerts.deliveries, report=report, status_page=page, escalations=alerts.escalations)
    log.info("%s: published artifacts %s and %s-checks", routine.name, key, key)
    say_why(result)
    return final_state(result)


def publish_result(
    result: RoutineResult,
    key: str,
    deliveries: Sequence[DeliveryLike] = (),
    report: str | None = None,
    status_page: Path | None = None,
    escalations: Sequence[Any] = (),
) -> None:
    """The run's summary (markdown) and checks (table) artifacts under ``key``.

    ``report`` replaces the generic summary with a routine's own (the drill report); the alerts
    section and the escalations it told are appended either way, and a link to the status page when
    it was refreshed.
    """
    markdown = summary_markdown(result, deliveries) if report is None else report + deliveries_markdown(deliveries)
    markdown += escalations_markdown(escalations)
    if status_page is not None:
        markdown += f"\n\nStatus page: {status_page.as_uri()}\n"
    # The table quoted: Prefect need not walk thousands of rows looking for futures (a probe run's services).
    publish_artifacts(key, markdown, quote(checks_table(result)), result.routine, result.status)


def refresh_status(run: RoutineRun) -> Path | None:
    """Refresh ``$OPSFLOW_HOME/status/index.html`` (every routine, and dr-drill) after a stored result;
    bookkeeping: a failure is one WARNING line and None, never the run's outcome."""
    from flows.registry import OTHER_FLOWS, ROUTINES  # the registry imports this module

    try:
        now = run.clock or run.now
        routines = [*ROUTINES, *OTHER_FLOWS]
        return refresh_status_page(run.store, run.config, routines, now, prefect_ui_url(), render=render_status_page)
    except Exception as exc:
        log.warning("%s: status page not refreshed: %s", run.routine.name, reason(exc))
        return None


def say_why(result: RoutineResult) -> None:
    """One WARNING line per ``warn`` check, one ERROR line per ``fail``/``error`` check, in the run's logs."""
    logger = get_run_logger()
    for item in result.items:
        for check in item.checks:
            if check.status == "ok":
                continue
            level = logging.WARNING if check.status == "warn" else logging.ERROR
            logger.log(level, "%s: %s: %s", item.name, check.check, redact(check.detail), extra=reason_extra())


def final_state(result: RoutineResult) -> State[Any]:
    """Completed (warnings allowed), or Failed naming the failing items and their checks."""
    counts = result.summary
    if not result.exit_code:
        warned = f", {counts.warn} with warnings" if counts.warn else ""
        return Completed(message=f"{count_items(len(result.items))} checked{warned}", data=result)
    failing = [item for item in result.items if item.status in ("fail", "error")]
    named = "; ".join(f"{item.name} ({', '.join(failing_checks(item))})" for item in failing)
    message = shorten(redact(f"{len(failing)} of {count_items(len(result.items))} failed: {named}"))
    return Failed(message=message, data=Finding(message, result))


def count_items(count: int) -> str:
    """``1 item``, ``2 items``."""
    return f"{count} item" if count == 1 else f"{count} items"


def incomplete(routine: str, as_of: datetime | None, error: BaseException) -> State[Any]:
    """The routine could not complete: Failed with the one-line reason; no traceback (SPEC §5)."""
    why = reason(error)
    if isinstance(error, ConfigError | UsageError):
        why = f"bad config or parameters: {why}"
    log.error("%s could not complete: %s", routine, why)
    result = RoutineResult(
        routine=routine, as_of=resolve_now(as_of), flow_run_id=current_flow_run_id(), items=[], error=why
    )
    return Failed(message=shorten(why), data=Finding(why, result))


def routine_result(state: State[Any]) -> RoutineResult | None:
    """The :class:`RoutineResult` a finished routine flow run carries (its state's data), if any."""
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, Finding):
        outcome = outcome.payload
    return outcome if isinstance(outcome, RoutineResult) else None


# -- flows of routines with the standard parameters ---------------------------------------------


def routine_flow(routine: Routine, module: str) -> Flow[..., Any]:
    """The Prefect flow of ``routine``: named after it, parameters ``as_of`` and ``config_path``.

    ``module`` is the declaring module's ``__name__``, which must hold the flow as the routine's name
    in snake case (``backup_verification``): deployments built from the flow object (``serve()``,
    ``to_deployment``) find their entrypoint there.
    """

    def body(as_of: AsOf = None, config_path: ConfigPath = None) -> State[Any]:
        return run_routine(routine, as_of, config_path)

    body.__name__ = body.__qualname__ = routine.name.replace("-", "_")
    body.__module__ = module
    body.__doc__ = routine.description
    runner = ThreadPoolTaskRunner(max_workers=routine.max_concurrency) if routine.max_concurrency else None
    return flow(name=routine.name, description=routine.description, task_runner=runner)(body)
