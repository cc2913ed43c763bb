"""Alert delivery end to end: real loopback HTTP receivers, a real SMTP server, the ops store, Prefect."""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prefect import flow

from opsflow.config import Config, parse_config
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from tasks.notify import AlertReport, send_alerts
from tests.conftest import SmtpServer
from tests.receiver import HttpReceiver

T0 = datetime(2026, 11, 22, 6, tzinfo=UTC)
SLACK_PATH = "/services/T0000/B0000/SLACKSECRETTOKEN42"
ROUTING_KEY = "PDROUTINGKEYSECRET00000000000042"
SMTP_PASSWORD = "smtp-password-secret-42"


def config_for(receiver: HttpReceiver, smtp: SmtpServer | None = None, webhook_path: str = "/hook") -> Config:
    email_section = (
        f"  email: {{smtp_host: 127.0.0.1, smtp_port: {smtp.port}, starttls: false, "
        "sender: opsflow@example.com, to: [oncall@example.com]}\n"
        if smtp
        else ""
    )
    return parse_config(
        "notifications:\n"
        "  slack: {webhook_url: '${SLACK_URL}', channel: '#ops'}\n"
        f"  pagerduty: {{routing_key: '${{PD_KEY}}', events_url: '{receiver.url('/v2/enqueue')}'}}\n"
        f"  webhook: {{url: '{receiver.url(webhook_path)}', headers: {{X-Api-Key: '${{HOOK_TOKEN}}'}}}}\n"
        + email_section,
        environ={"SLACK_URL": receiver.url(SLACK_PATH), "PD_KEY": ROUTING_KEY, "HOOK_TOKEN": "hook-token-secret-42"},
    )


def finding(status: str, at: datetime = T0, item: str = "orders-db") -> RoutineResult:
    check = Check(check="fresh", status=status, detail=f"newest backup is {status}")  # type: ignore[arg-type]
    return RoutineResult(routine="backup-verification", as_of=at, items=[Item(name=item, checks=[check])])


def latest_artifact(key: str) -> Any:
    """The newest artifact under ``key`` (Prefect's sync ``Artifact.get`` leaks its client's sockets)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            limit=1, sort=ArtifactSort.UPDATED_DESC, artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return found[0] if found else None


def alert_run(result: RoutineResult, config: Config, store: OpsStore) -> AlertReport:
    @flow(name="alert-test")
    def alerting() -> AlertReport:
        return send_alerts(result, config, store)

    return alerting()


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log line of the process, Prefect's included, as formatted text."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lines
    for logger in loggers:
        logger.removeHandler(handler)


def test_trigger_once_then_resolve_on_every_channel(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver, smtp_server: SmtpServer
) -> None:
    config = config_for(receiver, smtp_server)

    first = alert_run(finding("fail"), config, store)
    assert [(d.channel, d.delivered) for d in first.deliveries] == [
        ("slack", True),
        ("pagerduty", True),
        ("webhook", True),
        ("email", True),
    ]
    trigger = receiver.to("/v2/enqueue")[0].json()
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["dedup_key"] == "opsflow/backup-verification/orders-db"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "opsflow"
    assert "fresh: newest backup is fail" in trigger["payload"]["summary"]
    slack = receiver.to(SLACK_PATH)[0].json()
    assert slack["channel"] == "#ops" and "orders-db" in slack["text"]
    hook = receiver.to("/hook")[0]
    assert hook.headers["X-Api-Key"] == "hook-token-secret-42"
    assert hook.json()["event"] == "trigger"
    mail = email.message_from_bytes(smtp_server.messages[0].data)
    assert mail["Subject"] == "[opsflow] FAILING: backup-verification / orders-db is fail"
    assert smtp_server.messages[0].recipients == ["oncall@example.com"]

    still_failing = alert_run(finding("fail", T0 + timedelta(hours=1)), config, store)
    assert still_failing.deliveries == []
    assert len(receiver.to("/v2/enqueue")) == 1

    recovered = alert_run(finding("ok", T0 + timedelta(hours=2)), config, store)
    assert {d.channel for d in recovered.deliveries if d.delivered} == {"slack", "pagerduty", "webhook", "email"}
    resolve = receiver.to("/v2/enqueue")[1].json()
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "opsflow/backup-verification/orders-db",
    }
    assert len(smtp_server.messages) == 2

    with psycopg.connect(store._url) as conn:
        logged = conn.execute("select kind, channel, delivered from opsflow.alert_deliveries order by id").fetchall()
    assert [(k, c) for k, c, _ in logged] == [
        ("trigger", "slack"),
        ("trigger", "pagerduty"),
        ("trigger", "webhook"),
        ("trigger", "email"),
        ("resolve", "slack"),
        ("resolve", "pagerduty"),
        ("resolve", "webhook"),
        ("resolve", "email"),
    ]


def test_warnings_go_to_slack_and_webhook_only(prefect_api: None, store: OpsStore, receiver: HttpReceiver) -> None:
    report = alert_run(finding("warn"), config_for(receiver), store)
    assert sorted(d.channel for d in report.deliveries) == ["slack", "webhook"]
    assert receiver.to("/v2/enqueue") == []


def test_a_channel_that_keeps_failing_is_retried_and_does_not_stop_the_others(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver, captured_logs: list[str]
) -> None:
    receiver.fail_next("/hook", 503, times=10)  # down for longer than the retries last
    receiver.fail_next("/v2/enqueue", 400, times=1)  # a bad request cannot change: no retry
    report = alert_run(finding("fail"), config_for(receiver), store)
    outcome = {d.channel: (d.delivered, d.error) for d in report.deliveries}
    assert outcome["slack"] == (True, None)
    assert outcome["webhook"][0] is False and "webhook: HTTP 503" in str(outcome["webhook"][1])
    assert outcome["pagerduty"][0] is False and "pagerduty: HTTP 400" in str(outcome["pagerduty"][1])
    assert len(receiver.to("/hook")) == 4  # the first attempt and 3 retries, each visible in the UI
    assert len(receiver.to("/v2/enqueue")) == 1
    assert any("not delivered to webhook" in line for line in captured_logs)

    # The page did not land: the next run pages again instead of staying quiet.
    again = alert_run(finding("fail", T0 + timedelta(minutes=5)), config_for(receiver), store)
    assert [(a.kind, d.channel, d.delivered) for a in again.alerts for d in again.deliveries] == [
        ("page", "pagerduty", True)
    ]


def test_no_secret_reaches_logs_errors_or_payload_echoes(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver, captured_logs: list[str], smtp_server: SmtpServer
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=receiver.url(SLACK_PATH)).save("test-slack-webhook", overwrite=True)
    config = parse_config(
        "notifications:\n"
        "  slack: {webhook_url: {secret: test-slack-webhook}}\n"
        f"  email: {{smtp_host: 127.0.0.1, smtp_port: {smtp_server.port}, starttls: false, username: ops, "
        "password: '${SMTP_PASSWORD}', sender: opsflow@example.com, to: [oncall@example.com]}\n",
        environ={"SMTP_PASSWORD": SMTP_PASSWORD},
    )
    receiver.fail_next(SLACK_PATH, 404, times=1)  # Slack's answer to a revoked webhook
    report = alert_run(finding("fail"), config, store)
    # aiosmtpd without TLS refuses AUTH: a permanent failure whose message must not carry the password.
    errors = " ".join(str(d.error) for d in report.failed)
    assert {d.channel for d in report.failed} == {"slack", "email"}
    logging.getLogger("opsflow.test").warning("resolved webhook was %s", receiver.url(SLACK_PATH))
    everything = "\n".join(captured_logs) + errors
    assert "SLACKSECRETTOKEN42" not in everything
    assert SMTP_PASSWORD not in everything
    assert "resolved webhook was ***" in everything


def test_nothing_is_sent_without_channels(prefect_api: None, store: OpsStore) -> None:
    report = alert_run(finding("fail"), Config(), store)
    assert len(report.alerts) == 1 and report.deliveries == []
    assert store.alert_states("backup-verification")[0]["is_open"] is True


def test_failed_delivery_is_shown_in_the_runs_summary_artifact(
    prefect_api: None, store: OpsStore, receiver: HttpReceiver
) -> None:
    from flows._routine import publish_result

    receiver.fail_next("/hook", 410, times=1)  # gone: permanent, reported at once
    config = config_for(receiver)

    @flow(name="alert-artifact-test")
    def routine() -> None:
        result = finding("fail")
        report = send_alerts(result, config, store)
        publish_result(result, key="alert-artifact-test", deliveries=report.deliveries)

    routine()
    summary = latest_artifact("alert-artifact-test")
    assert summary is not None and summary.type == "markdown"
    text = str(summary.data)
    assert "# backup-verification: FAIL" in text
    assert "| orders-db | fresh | ❌ fail | newest backup is fail |" in text
    assert "| orders-db | trigger | webhook | **no** | webhook: HTTP 410" in text
    assert "| orders-db | trigger | slack | yes |" in text
    assert "SLACKSECRETTOKEN42" not in text
    table = latest_artifact("alert-artifact-test-checks")
    assert table is not None and table.type == "table"
    assert "newest backup is fail" in str(table.data)


def test_one_composer_writes_every_email_and_refuses_a_header_injection() -> None:
    from tasks.notify import compose_email

    message = compose_email(
        "ops@example.com",
        ["a@example.com", "b@example.com"],
        "Monthly report",
        "the summary",
        html="<p>the report</p>",
        attachments=[(b"%PDF-1.7", "application/pdf", "report.pdf")],
    )
    assert message["To"] == "a@example.com, b@example.com" and message["Subject"] == "Monthly report"
    assert message.get_body(("plain",)).get_content().strip() == "the summary"  # type: ignore[union-attr]
    assert message.get_body(("html",)).get_content().strip() == "<p>the report</p>"  # type: ignore[union-attr]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "report.pdf" and attachment.get_content() == b"%PDF-1.7"
    # A service or item name with a line break never becomes a second header (a Bcc to someone else).
    with pytest.raises(ValueError, match=r"linefeed|carriage return"):
        compose_email("ops@example.com", ["a@example.com"], "down\r\nBcc: evil@example.com", "x")
