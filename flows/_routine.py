"""What every routine's flow does around its own work: parameters, "now", and the finish.

:func:`finish` records the result, alerts, publishes the artifacts and turns a
finding into a Failed flow run that still carries the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import runtime
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State
from pydantic import Field

from opsflow.config import Config
from opsflow.redact import redact
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from reports.summary import DeliveryLike, checks_table, deliveries_markdown, summary_markdown
from tasks.artifacts import publish_artifacts
from tasks.notify import send_alerts
from tasks.routine import save_result

# Every routine's parameters, described so the Prefect UI renders a form.
AsOf = Annotated[datetime | None, Field(description="Run as if now were this instant (ISO 8601); empty means now.")]
ConfigPath = Annotated[
    str | None, Field(description="opsflow.yaml to use; empty means $OPSFLOW_CONFIG, else ./opsflow.yaml.")
]


def resolve_now(as_of: datetime | None) -> datetime:
    """``as_of`` (made timezone-aware, UTC when naive) or the current instant."""
    if as_of is None:
        return datetime.now(UTC).replace(microsecond=0)
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)


def current_flow_run_id() -> str | None:
    run_id = runtime.flow_run.id
    return str(run_id) if run_id else None


def item_from(name: str, future: PrefectFuture[Any], check: str) -> Item:
    """The item a task returned, or an ``error`` item when it could not be checked (retries exhausted)."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result()  # type: ignore[no-any-return]
    outcome = state.result(raise_on_failure=False)
    reason = str(outcome) if isinstance(outcome, BaseException) else (state.message or "task failed")
    return Item(
        name=name, checks=[Check(check=check, status="error", detail=f"could not be checked: {redact(reason)}")]
    )


def publish_result(
    result: RoutineResult, key: str, deliveries: Sequence[DeliveryLike] = (), report: str | None = None
) -> None:
    """The run's summary (markdown) and checks (table) artifacts under ``key``.

    ``report`` replaces the generic summary with a routine's own (the drill report); the
    alerts section is appended either way.
    """
    markdown = summary_markdown(result, deliveries) if report is None else report + deliveries_markdown(deliveries)
    publish_artifacts(key, markdown, checks_table(result), result.routine, result.status)


def finish(
    result: RoutineResult,
    config: Config,
    store: OpsStore,
    key: str,
    scope: str = "",
    alert_on: RoutineResult | None = None,
    report: str | None = None,
) -> State[Any]:
    """Record, alert, publish; end Failed (carrying the result) when an item is ``fail`` or ``error``.

    ``alert_on`` is the view alerts are decided on, when it is not the result itself
    (the uptime probe pages on incidents, not on every failed probe); ``report`` is a
    routine's own markdown report, published instead of the generic summary.
    """
    save_result(store, result, scope)
    alerts = send_alerts(alert_on or result, config, store)
    publish_result(result, key=key, deliveries=alerts.deliveries, report=report)
    if result.exit_code:
        bad = result.summary.fail + result.summary.error
        return Failed(message=f"{bad} of {len(result.items)} items failed", data=result)
    return Completed(message=f"{len(result.items)} items ok", data=result)
