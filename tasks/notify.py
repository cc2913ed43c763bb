"""Deliver a routine's findings to Slack, PagerDuty (Events API v2), a webhook and email.

A routine calls one function with its result, inside its flow::

    from tasks.notify import send_alerts

    report = send_alerts(result, config, store)   # plans, delivers, records
    report.failed                                 # deliveries that did not land, for the summary artifact

What is sent when is decided by :mod:`tasks.alert_rules` from the alert state
kept in the ops store: a failing item triggers once, stays quiet while it
stays failed, resolves when it recovers; warnings go to Slack and the webhook
only; a flapping item pages at most once per ``notifications.page_interval``.

Each delivery is its own task run (``notify[slack:orders-db]``) with the
project's retry policy; a channel that keeps failing is logged, recorded and
returned, and never stops the routine or the other channels. Secrets are
resolved inside the delivery task and are masked everywhere by
:mod:`opsflow.redact`.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config, EmailNotification, Notifications, resolve_headers, resolve_secret
from opsflow.redact import redact
from opsflow.results import RoutineResult
from opsflow.store import OpsStore
from tasks.alert_rules import (
    Alert,
    AlertState,
    Channel,
    email_subject_and_body,
    pagerduty_event,
    plan_alerts,
    settle,
    slack_payload,
    webhook_payload,
)
from tasks.escalation import EscalationOutcome, escalate
from tasks.retry import IO_RETRIES, PermanentFailure, TransientFailure, http_status_is_permanent, with_retries

log = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
HTTP_TIMEOUT_SECONDS = 10.0
SMTP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Delivery:
    """The outcome of one alert on one channel."""

    alert: Alert
    channel: Channel
    delivered: bool
    error: str | None = None


@dataclass(frozen=True)
class AlertReport:
    """What :func:`send_alerts` did: the alerts planned and every delivery's outcome."""

    alerts: list[Alert]
    deliveries: list[Delivery]
    #: Escalation tiers told (or tried) by this run, and resolves told to escalated tiers (``tasks.escalation``).
    escalations: list[EscalationOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.delivered]


# -- channels: plain functions ------------------------------------------------------


def post_json(channel: str, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """POST ``payload``; raise Permanent/TransientFailure with a message that never contains the URL."""
    # One attempt at the transport level: Prefect's task retries are the only retry loop.
    transport = httpx.HTTPTransport(retries=0)
    try:
        with httpx.Client(transport=transport, timeout=HTTP_TIMEOUT_SECONDS) as client:
            response = client.post(url, json=payload, headers=headers)
    except httpx.TimeoutException:
        raise TransientFailure(f"{channel}: timed out after {HTTP_TIMEOUT_SECONDS:g}s") from None
    except httpx.HTTPError as exc:
        raise TransientFailure(f"{channel}: {type(exc).__name__}: {redact(str(exc))}") from None
    if response.status_code >= 400:
        message = f"{channel}: HTTP {response.status_code} {response.reason_phrase}: {redact(response.text[:200])}"
        raise (PermanentFailure if http_status_is_permanent(response.status_code) else TransientFailure)(message)


def _not_configured(channel: str) -> PermanentFailure:
    """An alert routed to a channel the config does not set up (retrying cannot change that)."""
    return PermanentFailure(f"{channel}: not configured (notifications.{channel})")


def send_slack(notifications: Notifications, alert: Alert, ui_url: str | None) -> None:
    slack = notifications.slack
    if slack is None:
        raise _not_configured("slack")
    url = resolve_secret(slack.webhook_url) or ""
    post_json("slack", url, slack_payload(alert, ui_url, slack.channel))


def send_pagerduty(notifications: Notifications, alert: Alert, ui_url: str | None) -> None:
    pagerduty = notifications.pagerduty
    if pagerduty is None:
        raise _not_configured("pagerduty")
    routing_key = resolve_secret(pagerduty.routing_key) or ""
    url = str(pagerduty.events_url or PAGERDUTY_EVENTS_URL)
    post_json("pagerduty", url, pagerduty_event(alert, routing_key, ui_url))


def send_webhook(notifications: Notifications, alert: Alert, ui_url: str | None) -> None:
    webhook = notifications.webhook
    if webhook is None:
        raise _not_configured("webhook")
    url = resolve_secret(webhook.url) or ""
    post_json("webhook", url, webhook_payload(alert, ui_url), resolve_headers(webhook.headers))


def send_email(notifications: Notifications, alert: Alert, ui_url: str | None) -> None:
    settings = notifications.email
    if settings is None:
        raise _not_configured("email")
    subject, body = email_subject_and_body(alert, ui_url)
    send_message(settings, compose_email(settings.sender, settings.to, subject, body))


def compose_email(
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    attachments: Sequence[tuple[bytes, str, str]] = (),
) -> EmailMessage:
    """One email as every sender here writes it (alerts, escalations, digests, the monthly report): ``text``
    as the plain part, ``html`` as its alternative, ``attachments`` as ``(data, "type/subtype", filename)``.
    A header with a line break is refused (``ValueError``), never sent as two headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for data, mime_type, filename in attachments:
        maintype, _, subtype = mime_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def send_message(settings: EmailNotification, message: EmailMessage) -> None:
    """Send ``message`` through the configured SMTP server (STARTTLS and login as configured), one attempt;
    raise Permanent/TransientFailure by what the server said, never echoing a password."""
    password = resolve_secret(settings.password)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        # 535 (bad credentials) is permanent; 454 (temporary authentication failure) may pass on retry.
        failure = PermanentFailure if exc.smtp_code >= 500 else TransientFailure
        raise failure(f"email: SMTP login failed: {exc.smtp_code} {redact(smtp_reply(exc))}") from None
    except (smtplib.SMTPNotSupportedError, smtplib.SMTPRecipientsRefused) as exc:
        raise PermanentFailure(f"email: {type(exc).__name__}: {redact(str(exc))}") from None
    except smtplib.SMTPResponseException as exc:
        # 5xx replies are permanent; 4xx (greylisting, busy) may pass on retry.
        failure = PermanentFailure if exc.smtp_code >= 500 else TransientFailure
        raise failure(f"email: SMTP {exc.smtp_code}: {redact(smtp_reply(exc))}") from None
    except ssl.SSLCertVerificationError as exc:
        # An untrusted or wrong certificate does not fix itself between retries.
        raise PermanentFailure(f"email: {type(exc).__name__}: {redact(str(exc))}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientFailure(f"email: {type(exc).__name__}: {redact(str(exc))}") from None


def smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    """The server's reply text on one line (smtplib keeps it as bytes, lines joined by newlines)."""
    reply = exc.smtp_error
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


SENDERS = {"slack": send_slack, "pagerduty": send_pagerduty, "webhook": send_webhook, "email": send_email}


def configured_channels(notifications: Notifications) -> set[str]:
    """Channels alerts can go to (email needs recipients)."""
    channels = set(notifications.channels)
    if notifications.email is not None and not notifications.email.to:
        channels.discard("email")
    return channels


def prefect_ui_url() -> str | None:
    """The Prefect UI's address, for links in alerts (``PREFECT_UI_URL``), if known."""
    from prefect.settings import PREFECT_UI_URL

    return os.environ.get("PREFECT_UI_URL") or PREFECT_UI_URL.value()


# -- tasks --------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="notify[{channel}:{alert.item}]")
def deliver(channel: Channel, alert: Alert, notifications: Notifications, ui_url: str | None) -> None:
    """Send one alert on one channel."""
    SENDERS[channel](notifications, alert, ui_url)


# -- bookkeeping: plain code under the same retry policy ------------------------------


def load_alert_states(store: OpsStore, routine: str) -> dict[str, AlertState]:
    rows = with_retries(lambda: store.alert_states(routine), "read the alert state")
    return {row["item"]: AlertState(**row) for row in rows}


def save_alert_outcome(store: OpsStore, states: list[AlertState], report: AlertReport) -> None:
    deliveries = [
        {
            "routine": d.alert.routine,
            "item": d.alert.item,
            "kind": d.alert.kind,
            "channel": d.channel,
            "delivered": d.delivered,
            "error": d.error,
            "as_of": d.alert.as_of,
            "flow_run_id": d.alert.flow_run_id,
        }
        for d in report.deliveries
    ]
    rows = [asdict(state) for state in states]
    with_retries(lambda: store.save_alert_outcome(rows, deliveries), "save the alert state")


def _failure_reason(state: Any) -> str:
    """The delivery's own error message, not Prefect's "Task run encountered..." wrapper."""
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        return str(outcome) or type(outcome).__name__
    return state.message or "delivery failed"


# -- the one entry point ----------------------------------------------------------------


def send_alerts(result: RoutineResult, config: Config, store: OpsStore) -> AlertReport:
    """Plan alerts from ``result`` and the stored alert state, deliver them, record the outcome.

    Call it inside the routine's flow. Never raises for a channel that fails:
    see :attr:`AlertReport.failed`.
    """
    notifications = config.notifications
    channels = configured_channels(notifications)
    previous = load_alert_states(store, result.routine)
    planned, alerts = plan_alerts(previous, result, notifications.page_interval)
    ui_url = prefect_ui_url()
    submitted = [
        (alert, channel, deliver.submit(channel, alert, notifications, ui_url))
        for alert in alerts
        for channel in alert.channels
        if channel in channels
    ]
    deliveries: list[Delivery] = []
    for alert, channel, future in submitted:
        future.wait()
        state = future.state
        if state.is_completed():
            deliveries.append(Delivery(alert, channel, delivered=True))
        else:
            error = redact(_failure_reason(state))
            log.warning(
                "alert %s for %s/%s not delivered to %s: %s", alert.kind, alert.routine, alert.item, channel, error
            )
            deliveries.append(Delivery(alert, channel, delivered=False, error=error))
    report = AlertReport(alerts=alerts, deliveries=deliveries)
    failed_pages = {d.alert.item for d in report.failed if d.channel == "pagerduty"}
    states = [settle(state, previous.get(state.item), state.item not in failed_pages) for state in planned]
    save_alert_outcome(store, states, report)
    report.escalations.extend(escalations_of(result, states, notifications, store, ui_url))
    return report


def escalations_of(
    result: RoutineResult, states: list[AlertState], notifications: Notifications, store: OpsStore, ui_url: str | None
) -> list[EscalationOutcome]:
    """This run's escalations (:func:`tasks.escalation.escalate`); a store that fails here is logged, never
    raised: the alerts are already out and recorded."""
    try:
        return escalate(result, states, notifications, store, ui_url)
    except Exception as exc:
        log.warning(
            "escalations of %s not processed this run (the next run tries again): %s", result.routine, redact(str(exc))
        )
        return []
