"""The routine template (``flows/_routine.py``): a routine declared on it runs end to end — result,
store, artifacts, alerts, a red run that says why — without a flow body of its own."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows._routine import Routine, RoutineRun, final_state, item_of, routine_flow, routine_result
from opsflow.errors import PermanentFailure, StoreUnavailable
from opsflow.logs import ENGINE_EXIT_MESSAGE, FailedRunOutcomeFilter
from opsflow.redact import install_log_redaction
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from tasks.retry import IO_RETRIES
from tasks.routine import Finding, item_state
from tests.fakes import MemoryStore, fake_resources
from tests.receiver import HttpReceiver
from tests.test_notify import latest_artifact

NOW = datetime(2026, 11, 22, 6, tzinfo=UTC)
ANSWERS = {"db-1": "42", "db-2": "41", "db-3": "unreachable"}


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="answer[{name}]")
def answer_task(name: str) -> Any:
    """The per-item work of a trivial routine: each item's answer must be 42."""
    answer = ANSWERS[name]
    if answer == "unreachable":
        raise PermanentFailure(f"{name}: connection refused")
    status = "ok" if answer == "42" else "fail"
    return item_state(Item(name=name, checks=[Check(check="answer", status=status, detail=f"answered {answer}")]))


def ask_every_item(run: RoutineRun) -> list[Item]:
    futures = {name: answer_task.submit(name) for name in ANSWERS}
    return [item_of(name, future, check="answer") for name, future in futures.items()]


def declare(**overrides: Any) -> Routine:
    settings: dict[str, Any] = {"name": "answer-check", "description": "Every item answers 42.", "work": ask_every_item}
    return Routine(**(settings | overrides))


# -- the finish, directly ---------------------------------------------------------------------


def test_a_red_result_ends_failed_naming_the_items_and_checks_and_carries_the_result() -> None:
    result = RoutineResult(
        routine="answer-check",
        as_of=NOW,
        items=[
            Item(name="db-1", checks=[Check(check="answer", status="ok")]),
            Item(name="db-2", checks=[Check(check="answer", status="fail", detail="answered 41")]),
            Item(name="db-3", checks=[Check(check="answer", status="warn", detail="slow")]),
        ],
    )
    state = final_state(result)
    assert state.is_failed()
    assert state.message == "1 of 3 items failed: db-2 (answer: answered 41)"
    assert routine_result(state) == result

    green = final_state(RoutineResult(routine="answer-check", as_of=NOW, items=result.items[::2]))
    assert green.is_completed() and green.message == "2 items checked, 1 with warnings"


def test_the_engine_record_of_a_failed_run_is_dropped_and_a_crash_keeps_its_traceback() -> None:
    from prefect.exceptions import FailedRun

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, ENGINE_EXIT_MESSAGE, None, info)

    keep = FailedRunOutcomeFilter().filter
    assert keep(record(Finding("db-2 failed", None))) is False
    assert keep(record(FailedRun("Run failed."))) is False
    assert keep(record(ValueError("a real bug"))) is True
    # Once a secret is registered, redaction moves a record's traceback into exc_text: still judged by type.
    install_log_redaction()
    redacted = logging.getLogRecordFactory()(
        "prefect.flow_runs", logging.ERROR, __file__, 1, ENGINE_EXIT_MESSAGE, None, record(Finding("x", None)).exc_info
    )
    assert redacted.exc_info is None and "Finding" in (redacted.exc_text or "")
    assert keep(redacted) is False
    other = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "something else", None, None)
    assert keep(other) is True


# -- a trivial routine on fakes ----------------------------------------------------------------


def test_a_routine_runs_on_fake_resources(prefect_api: None, tmp_path: Path) -> None:
    store = MemoryStore()
    flow = routine_flow(declare(resources=fake_resources(store, tmp_path, NOW)), __name__)
    state = flow(return_state=True)
    result = routine_result(state)
    assert result is not None and result.as_of == NOW
    assert {i.name: i.status for i in result.items} == {"db-1": "ok", "db-2": "fail", "db-3": "error"}
    assert result.items[2].checks[0].detail == "could not be checked: db-3: connection refused"
    assert state.is_failed()
    assert state.message == (
        "2 of 3 items failed: db-2 (answer: answered 41); db-3 (answer: could not be checked: db-3: connection refused)"
    )
    assert store.results("answer-check") == [result]
    assert {item for (_, item) in store.states} == {"db-1", "db-2", "db-3"}


def test_a_store_that_stays_down_ends_the_run_incomplete_with_one_line(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.retry.BACKOFF_SECONDS", 0.01)
    attempts: list[int] = []

    def unreachable() -> Any:
        attempts.append(1)
        raise StoreUnavailable("ops store unreachable: connection refused")

    def resources(config: Any) -> Any:
        built = fake_resources(MemoryStore(), tmp_path, NOW)(config)
        built.open_store = unreachable
        return built

    state = routine_flow(declare(resources=resources), __name__)(return_state=True)
    result = routine_result(state)
    assert state.is_failed() and state.message == "ops store unreachable: connection refused"
    assert result is not None and result.status == "error" and result.exit_code == 3
    assert result.error == "ops store unreachable: connection refused"
    assert len(attempts) == 4  # the one retry policy: 1 + 3 retries


# -- the same routine end to end on real components ----------------------------------------------


def test_a_routine_declared_on_the_template_runs_end_to_end(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    config = tmp_path / "opsflow.yaml"
    config.write_text(f"store: {{url: '{store.url}'}}\nnotifications:\n  webhook: {{url: '{receiver.url('/hook')}'}}\n")
    flow = routine_flow(declare(), __name__)
    state = flow(config_path=str(config), return_state=True)
    result = routine_result(state)
    assert result is not None and state.is_failed()

    # Stored, published, alerted.
    assert [r.flow_run_id for r in store.results("answer-check")] == [result.flow_run_id]
    summary = latest_artifact("answer-check")
    assert summary is not None and "| db-2 | answer | ❌ fail | answered 41 |" in str(summary.data)
    assert latest_artifact("answer-check-checks") is not None
    alerted = {request.json()["item"] for request in receiver.wait_for("/hook", count=2)}
    assert alerted == {"db-2", "db-3"}

    # Each item's task run says why; a permanent failure is not retried.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result.flow_run_id])))
    by_name = {run.name: run for run in runs}
    assert {"answer[db-1]", "answer[db-2]", "answer[db-3]"} <= set(by_name)
    assert by_name["answer[db-1]"].state.is_completed()
    assert by_name["answer[db-2]"].state.is_failed() and by_name["answer[db-2]"].state.message == "answer: answered 41"
    assert by_name["answer[db-2]"].run_count == 1 and by_name["answer[db-3]"].run_count == 1


# -- a what-if run (an explicit as_of far from now) ------------------------------------------------


def test_a_what_if_run_sends_no_alert_and_leaves_the_alert_state_as_it_was(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver, tmp_path: Path
) -> None:
    from datetime import timedelta

    started = datetime.now(UTC)

    def stale_since_yesterday(run: RoutineRun) -> list[Item]:
        status = "fail" if run.now > started - timedelta(days=1) else "ok"
        return [Item(name="orders-db", checks=[Check(check="fresh", status=status, detail=f"as of {run.now}")])]

    config = tmp_path / "opsflow.yaml"
    config.write_text(
        f"store: {{url: '{store.url}'}}\nnotifications:\n"
        f"  webhook: {{url: '{receiver.url('/hook')}'}}\n"
        f"  pagerduty: {{routing_key: 'pd-key', events_url: '{receiver.url('/v2/enqueue')}'}}\n"
    )
    flow = routine_flow(declare(name="whatif-check", work=stale_since_yesterday), __name__)

    live = flow(config_path=str(config), return_state=True)
    assert live.is_failed()
    assert [r.json()["event"] for r in receiver.wait_for("/hook")] == ["trigger"]
    assert [r.json()["event_action"] for r in receiver.wait_for("/v2/enqueue")] == ["trigger"]
    open_state = store.alert_states("whatif-check")
    assert [(s["item"], s["status"], s["is_open"]) for s in open_state] == [("orders-db", "fail", True)]

    # Two days back the set was still fresh: a what-if, recorded and published, but it alerts nobody.
    as_of = (started - timedelta(days=2)).replace(microsecond=0)
    what_if = flow(as_of=as_of, config_path=str(config), return_state=True)
    result = routine_result(what_if)
    assert what_if.is_completed() and result is not None and result.status == "ok"
    assert [r.as_of for r in store.results("whatif-check")][-1] == as_of
    summary = latest_artifact("whatif-check")
    assert summary is not None
    assert f"what-if run as of {as_of:%Y-%m-%dT%H:%M:%SZ}: no alerts sent, alert state unchanged" in str(summary.data)
    assert store.alert_states("whatif-check") == open_state
    assert len(receiver.to("/hook")) == 1 and len(receiver.to("/v2/enqueue")) == 1  # no resolve

    # The next live run finds the alert still open: no repeated trigger.
    assert flow(config_path=str(config), return_state=True).is_failed()
    assert len(receiver.to("/hook")) == 1 and len(receiver.to("/v2/enqueue")) == 1
    assert [(s["item"], s["is_open"]) for s in store.alert_states("whatif-check")] == [("orders-db", True)]
    live_summary = latest_artifact("whatif-check")
    assert live_summary is not None and "what-if" not in str(live_summary.data)


def test_an_as_of_within_five_minutes_of_the_clock_is_a_live_run(tmp_path: Path) -> None:
    from datetime import timedelta

    from opsflow.config import Config

    resources = fake_resources(MemoryStore(), tmp_path, NOW)(Config())
    run = RoutineRun(declare(), Config(), resources, NOW - timedelta(minutes=4), None, {})
    assert run.clock == NOW and not run.what_if
    assert RoutineRun(declare(), Config(), resources, NOW + timedelta(minutes=6), None, {}).what_if
    assert RoutineRun(declare(), Config(), resources, NOW - timedelta(days=2), None, {}).what_if
