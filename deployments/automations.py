"""Prefect automations as code: alert when any flow run fails, crashes or is late.

Routines alert from their own code, which cannot run when a routine crashes,
is killed, or never starts. These automations live on the Prefect server: its
triggers service sees the ``prefect.flow-run.*`` state events and its actions
service sends the notifications through Prefect's own notification blocks,
whatever happened to the flow run's process.

Usage::

    opsflow automations apply --config opsflow.yaml   # against $PREFECT_API_URL

    from deployments.automations import apply_automations

    applied = apply_automations(config)  # idempotent; needs a Prefect API
    print(applied.summary())             # names and ids only, never a secret

What is applied, for the channels of ``notifications`` in the config:

- one notification block per channel, saved by a stable name with
  ``overwrite=True`` (the document keeps its id):
  ``opsflow-slack`` (``SlackWebhook`` for a hooks.slack.com URL, else a
  ``CustomWebhookNotificationBlock`` posting Slack's JSON), ``opsflow-webhook``
  and ``opsflow-pagerduty`` (``CustomWebhookNotificationBlock``; the webhook
  posts a JSON document, PagerDuty an Events API v2 ``trigger`` with
  ``dedup_key`` ``prefect-flow-run-<flow run id>``). Credentials are resolved
  here with ``resolve_secret`` and kept only in the blocks' secret fields;
- automations ``opsflow: flow run failed or crashed`` (events
  ``prefect.flow-run.Failed`` and ``prefect.flow-run.Crashed``) and
  ``opsflow: scheduled run late`` (``prefect.flow-run.Late``), for any flow,
  each with one ``SendNotification`` per block; updated in place when they
  exist.

The server is made to match the config: a channel that is no longer configured
loses its block, and with no channel both automations are removed (so
``apply_automations(Config.empty())`` takes everything down). Email is not
carried: Prefect has no SMTP notification block.

Delivery is the server's: a webhook answering with an error is tried again by
its message broker (3 more times at once, then dropped), and the server logs
the error with the request URL. For Slack and generic webhooks that URL is the
credential, so keep the Prefect server's logs as private as the webhook.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound

from opsflow.config import Config, SecretRef, resolve_secret
from opsflow.errors import UsageError
from opsflow.redact import register_secret

__all__ = [
    "FAILED_AUTOMATION",
    "LATE_AUTOMATION",
    "PAGERDUTY_EVENTS_URL",
    "AppliedAutomations",
    "NotificationChannel",
    "apply_automations",
    "notification_channels",
]

log = logging.getLogger(__name__)

FAILED_AUTOMATION = "opsflow: flow run failed or crashed"
LATE_AUTOMATION = "opsflow: scheduled run late"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

SLACK_BLOCK = "opsflow-slack"
WEBHOOK_BLOCK = "opsflow-webhook"
PAGERDUTY_BLOCK = "opsflow-pagerduty"
# Every (block document name, block type slug) an apply may have saved: what it may remove.
_MANAGED_BLOCKS = (
    (SLACK_BLOCK, SlackWebhook.get_block_type_slug()),
    (SLACK_BLOCK, CustomWebhookNotificationBlock.get_block_type_slug()),
    (WEBHOOK_BLOCK, CustomWebhookNotificationBlock.get_block_type_slug()),
    (PAGERDUTY_BLOCK, CustomWebhookNotificationBlock.get_block_type_slug()),
)

# Prefect's SlackWebhook hands the URL to Apprise, which only posts to Slack's
# own hosts; any other host (Mattermost, a proxy, a test receiver) gets Slack's
# JSON through a custom webhook instead.
_SLACK_HOSTS = re.compile(r"https://hooks\.slack(-gov)?\.com/services/", re.IGNORECASE)

# --- message templates -------------------------------------------------------
# Jinja, rendered by the server's actions service with the triggering event and
# the objects it names: flow_run (its state taken from the event), flow, deployment.
# Inside a CustomWebhookNotificationBlock, ``{{subject}}``, ``{{body}}`` and the
# names of its ``secrets`` are the block's own substitution, done afterwards on
# its url/json_data/form_data/headers with the rendered subject and body.


def _ui_link(before: str) -> str:
    # ``ui_url`` gives None when the server knows no UI address (PREFECT_UI_URL or PREFECT_API_URL unset there).
    return "{% set url = flow_run|ui_url %}{% if url %}" + before + "{{ url }}{% endif %}"


MESSAGE_SUBJECT = "Prefect flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}"
MESSAGE_BODY = (
    "Flow run {{ flow_run.name }} of flow {{ flow.name }}"
    "{% if deployment %} (deployment {{ deployment.name }}){% endif %}"
    " entered {{ flow_run.state.name }} at {{ flow_run.state.timestamp }}."
    "{% if flow_run.state.name == 'Late' %}"
    " It was expected to start at {{ flow_run.expected_start_time }} and has not started."
    "{% endif %}"
    "{% if flow_run.state.message %}\n{{ flow_run.state.message }}{% endif %}" + _ui_link("\n")
)

WEBHOOK_BODY = """{
  "source": "prefect",
  "automation": {{ automation.name|tojson }},
  "event": {{ event.event|tojson }},
  "text": {{ ("Prefect flow run " ~ flow_run.name ~ " of " ~ flow.name ~ " is " ~ flow_run.state.name)|tojson }},
  "flow": {"id": {{ flow.id|string|tojson }}, "name": {{ flow.name|tojson }}},
  "flow_run": {"id": {{ flow_run.id|string|tojson }}, "name": {{ flow_run.name|tojson }},
               "url": {{ (flow_run|ui_url)|tojson }}},
  "deployment": {% if deployment %}{"id": {{ deployment.id|string|tojson }}, \
"name": {{ deployment.name|tojson }}}{% else %}null{% endif %},
  "state": {"type": {{ flow_run.state.type.value|tojson }}, "name": {{ flow_run.state.name|tojson }},
            "message": {{ flow_run.state.message|tojson }}, "timestamp": {{ flow_run.state.timestamp|string|tojson }}}
}"""

# PagerDuty: the block's subject carries the dedup key, its body the summary.
PAGERDUTY_SUBJECT = "prefect-flow-run-{{ flow_run.id }}"
PAGERDUTY_SUMMARY = (
    "{{ flow.name }}/{{ flow_run.name }} is {{ flow_run.state.name }}"
    "{% if flow_run.state.message %}: {{ flow_run.state.message|truncate(700) }}{% endif %}" + _ui_link(" ")
)


@dataclass(frozen=True)
class NotificationChannel:
    """A Prefect notification block for one configured channel and how its messages read.

    ``subject`` and ``body`` are the Jinja templates of the ``SendNotification``
    action that uses the block.
    """

    block_name: str
    block: NotificationBlock
    subject: str = MESSAGE_SUBJECT
    body: str = MESSAGE_BODY


@dataclass(frozen=True)
class AppliedAutomations:
    """What ``apply_automations`` left on the server: names and ids, no secret."""

    blocks: dict[str, UUID] = field(default_factory=dict)  # block document name -> id
    automations: dict[str, UUID] = field(default_factory=dict)  # automation name -> id
    removed: list[str] = field(default_factory=list)  # automations and blocks deleted
    skipped: dict[str, str] = field(default_factory=dict)  # channel -> why it is not carried

    def summary(self) -> str:
        lines = [f"notification block {name}: {block_id}" for name, block_id in self.blocks.items()]
        lines += [f"automation {name!r}: {automation_id}" for name, automation_id in self.automations.items()]
        lines += [f"removed {what}" for what in self.removed]
        lines += [f"{channel}: not applied, {why}" for channel, why in self.skipped.items()]
        if not self.automations:
            lines.append("no notification channel for Prefect to carry: no automation applied")
        return "\n".join(lines)


def notification_channels(config: Config) -> list[NotificationChannel]:
    """The notification blocks for the configured channels, credentials resolved.

    Loads ``{secret: NAME}`` references (needs a Prefect API); the blocks are
    not saved.
    """
    notifications = config.notifications
    channels: list[NotificationChannel] = []

    if notifications.slack is not None:
        url = _secret(notifications.slack.webhook_url, "slack.webhook_url")
        if _SLACK_HOSTS.match(url):
            block: NotificationBlock = SlackWebhook(url=url, notify_type="failure")
        else:
            block = CustomWebhookNotificationBlock(
                name="opsflow-slack",
                url="{{webhook_url}}",  # the URL is the credential: kept in ``secrets``
                json_data={"text": "{{subject}}", "attachments": [{"color": "danger", "text": "{{body}}"}]},
                secrets={"webhook_url": url},
            )
        channels.append(NotificationChannel(SLACK_BLOCK, block))

    if notifications.webhook is not None and notifications.webhook.url is not None:
        # Header values are often tokens: all of them go to ``secrets``.
        headers = {
            name: _secret(value, f"webhook.headers.{name}") for name, value in notifications.webhook.headers.items()
        }
        secret_headers = {f"header_{index}": value for index, value in enumerate(headers.values())}
        block = CustomWebhookNotificationBlock(
            name="opsflow-webhook",
            url="{{webhook_url}}",
            # The action renders the whole JSON document; posted verbatim.
            form_data="{{body}}",
            headers={"Content-Type": "application/json"}
            | {name: "{{" + key + "}}" for name, key in zip(headers, secret_headers, strict=True)},
            secrets={"webhook_url": _secret(notifications.webhook.url, "webhook.url")} | secret_headers,
        )
        channels.append(NotificationChannel(WEBHOOK_BLOCK, block, body=WEBHOOK_BODY))

    if notifications.pagerduty is not None:
        # Prefect's PagerDutyWebHook (Apprise) needs an API key besides the
        # routing key, cannot post to another events URL and sets no dedup key.
        block = CustomWebhookNotificationBlock(
            name="opsflow-pagerduty",
            url=notifications.pagerduty.events_url or PAGERDUTY_EVENTS_URL,
            json_data={
                "routing_key": "{{routing_key}}",
                "event_action": "trigger",
                "dedup_key": "{{subject}}",
                "client": "Prefect",
                "payload": {"summary": "{{body}}", "source": "prefect", "severity": "critical"},
            },
            secrets={"routing_key": _secret(notifications.pagerduty.routing_key, "pagerduty.routing_key")},
        )
        channels.append(NotificationChannel(PAGERDUTY_BLOCK, block, subject=PAGERDUTY_SUBJECT, body=PAGERDUTY_SUMMARY))
    return channels


def apply_automations(config: Config) -> AppliedAutomations:
    """Create or update the notification blocks and automations for ``config``.

    Idempotent: blocks and automations are found by name and updated in place;
    blocks of channels no longer configured are deleted, and with no channel
    the automations are deleted too.
    """
    channels = notification_channels(config)
    skipped = {"email": "Prefect has no SMTP notification block"} if config.notifications.email else {}

    blocks: dict[str, UUID] = {}
    actions: list[SendNotification] = []
    for channel in channels:
        blocks[channel.block_name] = channel.block.save(channel.block_name, overwrite=True, _sync=True)
        actions.append(
            SendNotification(block_document_id=blocks[channel.block_name], subject=channel.subject, body=channel.body)
        )
    saved = {(channel.block_name, channel.block.get_block_type_slug()) for channel in channels}

    automations: dict[str, UUID] = {}
    removed: list[str] = []
    with get_client(sync_client=True) as client:
        for automation in _automations(actions):
            if actions:
                automations[automation.name] = _upsert(client, automation)
            else:
                removed += _delete_automations(client, automation.name)
        # After the automations, so that none refers to a block being deleted.
        for name, slug in _MANAGED_BLOCKS:
            if (name, slug) not in saved and _delete_block(client, name, slug):
                removed.append(f"notification block {name} ({slug})")

    applied = AppliedAutomations(blocks=blocks, automations=automations, removed=removed, skipped=skipped)
    # DEBUG only: the caller shows the summary (``opsflow automations apply`` prints it), so a terminal
    # showing both stdout and INFO logs does not read every line twice.
    for line in applied.summary().splitlines():
        log.debug(line)
    return applied


def _secret(value: str | SecretRef | None, key: str) -> str:
    resolved = resolve_secret(value)
    if not resolved:
        raise UsageError(f"notifications.{key}: the credential resolved to an empty value")
    register_secret(resolved)  # masked in every log record of this process from now on
    return resolved


def _automations(actions: list[SendNotification]) -> list[AutomationCore]:
    def on(*events: str) -> EventTrigger:
        # Any flow run, every matching event: one notification per run and state.
        return EventTrigger(
            expect=set(events),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        )

    managed = "Managed by opsflow (deployments/automations.py): "
    return [
        AutomationCore(
            name=FAILED_AUTOMATION,
            description=managed + "notifies when any flow run fails or crashes.",
            enabled=True,
            tags=["opsflow"],
            trigger=on("prefect.flow-run.Failed", "prefect.flow-run.Crashed"),
            actions=actions,
        ),
        AutomationCore(
            name=LATE_AUTOMATION,
            description=managed + "notifies when a scheduled flow run has not started on time.",
            enabled=True,
            tags=["opsflow"],
            trigger=on("prefect.flow-run.Late"),
            actions=actions,
        ),
    ]


def _upsert(client: SyncPrefectClient, automation: AutomationCore) -> UUID:
    # The client takes AutomationCore: ``prefect.automations.Automation`` carries
    # ``id: None``, which the API refuses (422, extra field) on create.
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        return client.create_automation(automation)
    keep, *duplicates = existing
    client.update_automation(keep.id, automation)
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    return keep.id


def _delete_automations(client: SyncPrefectClient, name: str) -> list[str]:
    existing = client.read_automations_by_name(name)
    for automation in existing:
        client.delete_automation(automation.id)
    return [f"automation {name!r}"] if existing else []


def _delete_block(client: SyncPrefectClient, name: str, slug: str) -> bool:
    try:
        document = client.read_block_document_by_name(name, block_type_slug=slug, include_secrets=False)
    except ObjectNotFound:
        return False
    client.delete_block_document(document.id)
    return True
