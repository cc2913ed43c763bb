"""Escalation tiers: planned purely, claimed once in the store, and delivered through real uptime-probe
runs against a loopback service that goes down and recovers, the real SMTP server and a Slack receiver."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import Message
from pathlib import Path

import pytest

from opsflow.cli import run
from opsflow.config import EscalationTier
from opsflow.incident_store import claim_escalation, claim_resolve_notice, record_escalation, record_resolve_notice
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from tasks.alert_rules import AlertState
from tasks.escalation import plan_escalations, plan_resolve_notices
from tests.conftest import SmtpServer
from tests.http_targets import HttpTarget
from tests.receiver import HttpReceiver

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
TIERS = [
    EscalationTier(after="1m", to=["lead@example.com"], slack_mention="@lead"),
    EscalationTier(after="2m", to=["head@example.com"]),
]


def failing_result(at: datetime, *names: str) -> RoutineResult:
    items = [Item(name=n, checks=[Check(check="incident", status="fail", detail="incident open")]) for n in names]
    return RoutineResult(routine="uptime-probe", as_of=at, items=items)


def open_state(item: str, opened_at: datetime = T0, status: str = "fail") -> AlertState:
    return AlertState(routine="uptime-probe", item=item, status=status, is_open=True, opened_at=opened_at)  # type: ignore[arg-type]


# -- pure planning ------------------------------------------------------------------------------


def test_the_one_and_two_minute_durations_are_accepted() -> None:
    assert [t.after for t in TIERS] == [60.0, 120.0]


def test_each_tier_is_planned_once_its_after_has_passed_and_not_once_delivered() -> None:
    state = open_state("api")
    assert plan_escalations([state], failing_result(T0 + timedelta(seconds=59), "api"), TIERS, set()) == []
    at_one = plan_escalations([state], failing_result(T0 + timedelta(minutes=1), "api"), TIERS, set())
    assert [(s.kind, s.tier, s.to, s.mention) for s in at_one] == [("escalate", 1, ("lead@example.com",), "@lead")]
    at_two = plan_escalations([state], failing_result(T0 + timedelta(minutes=2), "api"), TIERS, {("api", T0, 1)})
    assert [s.tier for s in at_two] == [2]
    # Undelivered (not in done) is planned again; a later run after both were delivered plans nothing.
    later = failing_result(T0 + timedelta(minutes=9), "api")
    assert [s.tier for s in plan_escalations([state], later, TIERS, {("api", T0, 2)})] == [1]
    assert plan_escalations([state], later, TIERS, {("api", T0, 1), ("api", T0, 2)}) == []
    # A new episode of the same item is escalated afresh.
    again = open_state("api", opened_at=T0 + timedelta(minutes=8))
    assert [s.tier for s in plan_escalations([again], later, TIERS, {("api", T0, 1), ("api", T0, 2)})] == [1]


def test_only_open_failing_items_are_escalated() -> None:
    result = failing_result(T0 + timedelta(hours=1), "api")
    closed = AlertState(routine="uptime-probe", item="api", status="ok")
    warn = AlertState(routine="uptime-probe", item="api", status="warn")
    assert plan_escalations([closed, warn], result, TIERS, set()) == []
    recovering = open_state("api", status="ok")  # PagerDuty's resolve did not land: still open, but ok
    assert plan_escalations([recovering], result, TIERS, set()) == []


def escalated_row(item: str = "api", tier: int = 1, delivered: bool = True) -> dict[str, object]:
    return {
        "item": item,
        "opened_at": T0,
        "tier": tier,
        "after_seconds": 60.0,
        "recipients": ["lead@example.com"],
        "mention": "@lead",
        "delivered": delivered,
        "resolve_told_at": None,
    }


def test_the_resolve_is_told_to_the_tiers_that_were_escalated_once_the_episode_is_over() -> None:
    now = failing_result(T0 + timedelta(minutes=5), "api")
    rows = [escalated_row(tier=1), escalated_row(tier=2, delivered=False)]
    still_open = plan_resolve_notices([open_state("api")], now, rows)
    assert still_open == []
    recovered = AlertState(routine="uptime-probe", item="api", status="ok")
    notices = plan_resolve_notices([recovered], now, rows)
    assert [(n.kind, n.tier, n.to, n.mention) for n in notices] == [("resolve", 1, ("lead@example.com",), "@lead")]
    # A new episode opened since: the old one is over.
    reopened = open_state("api", opened_at=T0 + timedelta(minutes=4))
    assert [n.tier for n in plan_resolve_notices([reopened], now, rows)] == [1]
    # An item this run did not look at (another shard's) is left alone.
    assert plan_resolve_notices([AlertState(routine="uptime-probe", item="db")], now, rows) == []


# -- the ledger: a tier is claimed once ---------------------------------------------------------------


def test_a_tier_is_claimed_once_and_reclaimed_only_while_not_delivered(store: OpsStore) -> None:
    row = {
        "routine": "uptime-probe",
        "item": "api",
        "opened_at": T0,
        "tier": 1,
        "after_seconds": 60.0,
        "recipients": ["lead@example.com"],
        "mention": "@lead",
        "as_of": T0 + timedelta(minutes=1),
        "flow_run_id": None,
    }
    key = {k: row[k] for k in ("routine", "item", "opened_at", "tier")}
    now = datetime.now(UTC)
    assert claim_escalation(store, row, now) is not None
    assert claim_escalation(store, row, now) is None  # another run racing: held
    assert claim_resolve_notice(store, key, now) is None  # not delivered: no resolve to tell
    record_escalation(store, key, ["email"], False, "slack: HTTP 503", now)
    again = claim_escalation(store, row, now)
    assert again is not None and again["sent"] == ["email"] and again["attempts"] == 1
    record_escalation(store, key, ["email", "slack"], True, None, now)
    assert claim_escalation(store, row, now) is None  # delivered: never again
    assert claim_resolve_notice(store, key, now) is not None
    assert claim_resolve_notice(store, key, now) is None
    record_resolve_notice(store, key, ["email", "slack"], True, None, now)
    assert claim_resolve_notice(store, key, now) is None
    # A claim left by a run that died is stale after 10 minutes.
    stale = {**row, "tier": 2}
    assert claim_escalation(store, stale, now) is not None
    assert claim_escalation(store, stale, now + timedelta(minutes=11)) is not None


# -- through real runs ----------------------------------------------------------------------------


def config_file(tmp_path: Path, target: HttpTarget, receiver: HttpReceiver, smtp: SmtpServer) -> Path:
    path = tmp_path / "opsflow.yaml"
    path.write_text(
        "services:\n"
        f"  - {{name: api, url: '{target.url()}', timeout: 2s, failure_threshold: 1}}\n"
        "notifications:\n"
        f"  slack: {{webhook_url: '{receiver.url('/slack')}'}}\n"
        f"  email: {{smtp_host: 127.0.0.1, smtp_port: {smtp.port}, starttls: false, sender: opsflow@example.com,"
        " to: [oncall@example.com]}\n"
        "  escalate:\n"
        "    - {after: 1m, to: [lead@example.com], slack_mention: '@lead'}\n"
        "    - {after: 2m, to: [head@example.com]}\n"
    )
    return path


class Runs:
    """uptime-probe runs whose as_of values are a minute apart, each within 5 minutes of the clock."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    def next(self, expected: int) -> None:
        assert abs(self.as_of - datetime.now(UTC)) < timedelta(minutes=4), "a what-if would send nothing"
        code = run(["run", "uptime-probe", "--config", str(self.config), "--as-of", self.as_of.isoformat()])
        assert code == expected
        self.as_of += timedelta(minutes=1)


def mails_to(smtp: SmtpServer, address: str) -> list[Message]:
    return [email.message_from_bytes(m.data, policy=policy.default) for m in smtp.messages if address in m.recipients]


def slack_texts(receiver: HttpReceiver, prefix: str) -> list[str]:
    texts = [r.json()["text"] for r in receiver.to("/slack")]
    return [t for t in texts if t.startswith(prefix)]


def test_tiers_are_escalated_once_told_the_resolve_and_shown_on_the_timeline(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    receiver: HttpReceiver,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        runs = Runs(config_file(tmp_path, target, receiver, smtp_server))
        target.down = True
        runs.next(expected=1)  # the incident opens: trigger to Slack and email, no tier yet
        assert mails_to(smtp_server, "oncall@example.com") and not mails_to(smtp_server, "lead@example.com")
        runs.next(expected=1)  # open 1m: tier 1
        assert len(mails_to(smtp_server, "lead@example.com")) == 1
        assert len(slack_texts(receiver, "@lead")) == 1
        assert mails_to(smtp_server, "head@example.com") == []
        runs.next(expected=1)  # open 2m: tier 2, tier 1 not again
        runs.next(expected=1)  # open 3m: nothing new
        lead, head = mails_to(smtp_server, "lead@example.com"), mails_to(smtp_server, "head@example.com")
        assert len(lead) == 1 and len(head) == 1
        assert lead[0]["Subject"].strip().startswith("[opsflow] ESCALATED (tier 1")
        assert head[0]["Subject"].strip().startswith("[opsflow] ESCALATED (tier 2")
        assert lead[0]["From"] == "opsflow@example.com"
        assert "uptime-probe / api is fail" in lead[0]["Subject"].strip()
        assert len(slack_texts(receiver, "@lead")) == 1

        target.down = False
        runs.next(expected=0)  # recovered: the resolve goes to both tiers
        runs.next(expected=0)  # and only once
    lead, head = mails_to(smtp_server, "lead@example.com"), mails_to(smtp_server, "head@example.com")
    assert [m["Subject"].strip().split(" ")[1] for m in lead] == ["ESCALATED", "RESOLVED"]
    assert [m["Subject"].strip().split(" ")[1] for m in head] == ["ESCALATED", "RESOLVED"]
    lead_slack = slack_texts(receiver, "@lead")
    assert len(lead_slack) == 2 and "RESOLVED (escalated to tier 1)" in lead_slack[1]
    assert len(mails_to(smtp_server, "oncall@example.com")) == 2  # trigger and resolve, as before

    incidents = store.incidents("api")
    assert len(incidents) == 1 and incidents[0]["closed_at"] is not None

    # Through the real CLI, in a process of its own.
    environ = {**os.environ, "OPSFLOW_STORE_URL": pg_url}
    config = str(tmp_path / "opsflow.yaml")
    listed = subprocess.run(
        [sys.executable, "-m", "opsflow", "incidents", "--json", "--config", config],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=True,
    )
    (record,) = json.loads(listed.stdout)["incidents"]
    assert record["service"] == "api" and record["end"] is not None and record["end"].endswith("Z")
    assert record["alerts"] == 4 and record["escalations"] == 2  # trigger and resolve on Slack and email
    shown = subprocess.run(
        [sys.executable, "-m", "opsflow", "incidents", "show", str(record["id"]), "--json", "--config", config],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=True,
    )
    document = json.loads(shown.stdout)
    assert {k: document[k] for k in record} == record
    timeline = document["timeline"]
    kinds = [e["event"] for e in timeline]
    assert kinds[0] == "opened" and timeline[0]["at"] == record["start"]
    assert timeline[0]["detail"].startswith("1 consecutive failure: ") and "HTTP 503" in timeline[0]["detail"]
    resolved = kinds.index("resolved")
    assert timeline[resolved]["at"] == record["end"] and timeline[resolved]["detail"].startswith("HTTP 200 in ")
    escalated = [e for e in timeline if e["event"] == "escalated"]
    assert [e["detail"].split(" (")[0] for e in escalated] == ["tier 1", "tier 2"]
    assert all(e["detail"].endswith(": delivered") for e in escalated)
    first_alert, first_escalation = kinds.index("alert"), kinds.index("escalated")
    assert 0 < first_alert < first_escalation < kinds.index("escalated", first_escalation + 1) < resolved
    triggers = [e["detail"] for e in timeline[:first_escalation] if e["event"] == "alert"]
    assert sorted(triggers) == ["trigger via email: delivered", "trigger via slack: delivered"]
    after = [e["detail"] for e in timeline[resolved + 1 :]]
    assert "resolve via slack: delivered" in after and "resolve via email: delivered" in after
    assert sum(d.startswith("resolve to escalation tier") for d in after) == 2
    instants = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in timeline]
    assert instants == sorted(instants)


def test_a_failed_escalation_is_retried_at_the_next_run_and_then_delivered_once(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    receiver: HttpReceiver,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        runs = Runs(config_file(tmp_path, target, receiver, smtp_server))
        target.down = True
        runs.next(expected=1)  # trigger
        receiver.fail_next("/slack", 503, times=4)  # the first attempt and its 3 retries
        runs.next(expected=1)  # tier 1: the email lands, Slack does not
        assert len(mails_to(smtp_server, "lead@example.com")) == 1
        assert len(slack_texts(receiver, "@lead")) == 4
        with store.connection() as conn:
            row = conn.execute(
                "select delivered, sent, error, attempts from opsflow.escalations where tier = 1"
            ).fetchone()
        assert row is not None and row[0] is False and row[1] == ["email"] and "HTTP 503" in row[2] and row[3] == 1
        runs.next(expected=1)  # retried: Slack now lands; the email is not sent twice
        runs.next(expected=1)  # delivered: never again
    assert len(mails_to(smtp_server, "lead@example.com")) == 1
    assert len(slack_texts(receiver, "@lead")) == 5
    with store.connection() as conn:
        row = conn.execute("select delivered, sent, error, attempts from opsflow.escalations where tier = 1").fetchone()
    assert row == (True, ["email", "slack"], None, 2)
