"""The alert state machine and payloads (pure logic, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opsflow.results import Check, Item, RoutineResult
from tasks.alert_rules import (
    AlertState,
    pagerduty_event,
    plan_alerts,
    settle,
    slack_payload,
    webhook_payload,
)

T0 = datetime(2026, 11, 22, 6, tzinfo=UTC)
HOUR = 3600.0


def result(status: str, at: datetime = T0, check: str = "fresh", item: str = "orders-db") -> RoutineResult:
    return RoutineResult(
        routine="backup-verification",
        as_of=at,
        flow_run_id="7c0d6b0e-3f1e-4d7e-9a61-2b8d9f0e1a11",
        items=[Item(name=item, checks=[Check(check=check, status=status, detail=f"{check} is {status}")])],  # type: ignore[arg-type]
    )


def run(statuses: list[tuple[str, float]], interval: float = HOUR) -> list[tuple[str | None, tuple[str, ...]]]:
    """Feed a series of (status, hours after T0); return (alert kind, channels) per run."""
    states: dict[str, AlertState] = {}
    seen = []
    for status, hours in statuses:
        new_states, alerts = plan_alerts(states, result(status, T0 + timedelta(hours=hours)), interval)
        states = {s.item: s for s in new_states}
        seen.append((alerts[0].kind, alerts[0].channels) if alerts else (None, ()))
    return seen


ALL = ("slack", "pagerduty", "webhook", "email")


def test_failure_triggers_once_stays_quiet_then_resolves() -> None:
    assert run([("ok", 0), ("fail", 1), ("fail", 2), ("error", 3), ("ok", 4), ("ok", 5)]) == [
        (None, ()),
        ("trigger", ALL),
        (None, ()),
        (None, ()),
        ("resolve", ALL),
        (None, ()),
    ]


def test_warnings_never_page_and_are_said_once() -> None:
    assert run([("warn", 0), ("warn", 1), ("ok", 2)]) == [
        ("warn", ("slack", "webhook")),
        (None, ()),
        ("clear", ("slack", "webhook")),
    ]


def test_recovery_to_warn_resolves_the_page() -> None:
    assert [kind for kind, _ in run([("fail", 0), ("warn", 1)])] == ["trigger", "resolve"]


def test_flapping_item_pages_at_most_once_per_interval() -> None:
    without_pd = ("slack", "webhook", "email")
    assert run([("fail", 0), ("ok", 0.25), ("fail", 0.5), ("ok", 0.75), ("fail", 1.5)]) == [
        ("trigger", ALL),
        ("resolve", ALL),
        ("trigger", without_pd),  # paged 30 minutes ago: told, not paged
        ("resolve", without_pd),  # nothing open in PagerDuty to resolve
        ("trigger", ALL),  # 1.5 h after the last page
    ]


def test_suppressed_page_is_sent_once_the_interval_passes_while_still_failing() -> None:
    kinds = run([("fail", 0), ("ok", 0.1), ("fail", 0.2), ("fail", 0.5), ("fail", 1.1), ("fail", 1.2)])
    assert kinds[2] == ("trigger", ("slack", "webhook", "email"))
    assert kinds[3] == (None, ())
    assert kinds[4] == ("page", ("pagerduty",))
    assert kinds[5] == (None, ())


def test_a_page_that_did_not_land_is_tried_again_next_run() -> None:
    states, _ = plan_alerts({}, result("fail"), HOUR)
    failed = settle(states[0], None, pagerduty_landed=False)
    assert (failed.is_open, failed.paged) == (True, False)
    _, alerts = plan_alerts({"orders-db": failed}, result("fail", T0 + timedelta(minutes=5)), HOUR)
    assert [(a.kind, a.channels) for a in alerts] == [("page", ("pagerduty",))]


def test_a_resolve_that_did_not_land_is_tried_again_next_run() -> None:
    opened, _ = plan_alerts({}, result("fail"), HOUR)
    closed, alerts = plan_alerts({"orders-db": opened[0]}, result("ok", T0 + timedelta(hours=1)), HOUR)
    assert alerts[0].kind == "resolve"
    still_open = settle(closed[0], opened[0], pagerduty_landed=False)
    _, again = plan_alerts({"orders-db": still_open}, result("ok", T0 + timedelta(hours=2)), HOUR)
    assert [(a.kind, "pagerduty" in a.channels) for a in again] == [("resolve", True)]


def test_dedup_key_is_stable_per_routine_and_item_whichever_check_failed() -> None:
    _, first = plan_alerts({}, result("fail", check="fresh"), HOUR)
    _, other = plan_alerts({}, result("fail", check="size"), HOUR)
    assert first[0].dedup_key == other[0].dedup_key == "opsflow/backup-verification/orders-db"


def test_pagerduty_events_follow_the_v2_schema() -> None:
    _, alerts = plan_alerts({}, result("fail"), HOUR)
    event = pagerduty_event(alerts[0], "R0UTINGKEY0000000000000000000000", "http://ui:4200")
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == "R0UTINGKEY0000000000000000000000"
    assert event["dedup_key"] == "opsflow/backup-verification/orders-db"
    payload = event["payload"]
    assert isinstance(payload, dict)
    assert {"summary", "source", "severity"} <= payload.keys()
    assert payload["severity"] == "critical"
    assert payload["summary"].startswith("FAILING: backup-verification / orders-db is fail — fresh: fresh is fail")
    assert event["links"] == [
        {"href": "http://ui:4200/runs/flow-run/7c0d6b0e-3f1e-4d7e-9a61-2b8d9f0e1a11", "text": "Prefect flow run"}
    ]
    states, _ = plan_alerts({}, result("fail"), HOUR)
    _, resolved = plan_alerts({"orders-db": states[0]}, result("ok", T0 + timedelta(hours=1)), HOUR)
    assert pagerduty_event(resolved[0], "R0UTINGKEY0000000000000000000000", None) == {
        "routing_key": "R0UTINGKEY0000000000000000000000",
        "event_action": "resolve",
        "dedup_key": "opsflow/backup-verification/orders-db",
    }


def test_slack_and_webhook_payloads_name_routine_item_check_and_link() -> None:
    _, alerts = plan_alerts({}, result("fail"), HOUR)
    slack = slack_payload(alerts[0], "http://ui:4200", channel="#ops")
    assert slack["channel"] == "#ops"
    text = str(slack["blocks"])
    assert "backup-verification" in text and "orders-db" in text and "*fresh* (fail): fresh is fail" in text
    assert "<http://ui:4200/runs/flow-run/7c0d6b0e-3f1e-4d7e-9a61-2b8d9f0e1a11|flow run>" in text
    hook = webhook_payload(alerts[0], None)
    assert hook["event"] == "trigger" and hook["status"] == "fail" and hook["flow_run_url"] is None
    assert hook["checks"] == [
        {"check": "fresh", "status": "fail", "detail": "fresh is fail", "observed": None, "expected": None}
    ]
