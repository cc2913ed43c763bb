"""Escalation (SPEC §4 ``notifications.escalate``, §7): a failure still open ``after`` its trigger is
told to that tier once — email to ``to``, and a Slack message starting with ``slack_mention`` — and
the tier is told of the resolve when the item recovers.

The pure half plans; :func:`escalate` (called by :func:`tasks.notify.send_alerts` after the alert
outcome is saved, so at every run of every routine) claims, delivers and records:

- an **episode** is one alert state's open spell: from the trigger (``AlertState.opened_at``, the
  triggering run's ``as_of``) until the item is no longer ``fail``/``error``;
- at each run, every tier with ``as_of - opened_at >= after`` not yet delivered for the item's open
  episode is escalated (a tier added later, or one whose ``after`` has passed while no run ran,
  is told at the next run);
- a tier is claimed in ``opsflow.escalations`` (``insert … on conflict do nothing``) before it is
  sent, so two runs at once tell it once; a delivery that did not land (after its task's retries)
  is recorded not delivered and tried again by the next run of that routine; the channels that
  landed are not sent again (an email delivered while Slack failed is not repeated);
- when the episode is over, every tier told of it is told of the resolve (once, retried the same
  way); a tier whose escalation never landed is not told of a resolve.

>>> from datetime import UTC, timedelta
>>> from opsflow.config import EscalationTier
>>> from opsflow.results import Check, Item
>>> t0 = datetime(2026, 11, 22, 6, tzinfo=UTC)
>>> state = AlertState(routine="uptime-probe", item="api", status="fail", is_open=True, opened_at=t0)
>>> tiers = [EscalationTier(after="1m", to=["lead@example.com"]), EscalationTier(after="2m", slack_mention="@head")]
>>> failing = Item(name="api", checks=[Check(check="incident", status="fail", detail="open")])
>>> result = RoutineResult(routine="uptime-probe", as_of=t0 + timedelta(seconds=90), items=[failing])
>>> [(s.tier, s.item) for s in plan_escalations([state], result, tiers, done=set())]
[(1, 'api')]
>>> plan_escalations([state], result, tiers, done={("api", t0, 1)})
[]
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import EscalationTier, Notifications, resolve_secret
from opsflow.incident_store import (
    claim_escalation,
    claim_resolve_notice,
    escalation_rows,
    record_escalation,
    record_resolve_notice,
)
from opsflow.redact import redact
from opsflow.results import Check, RoutineResult, format_instant
from opsflow.store import OpsStore
from opsflow.units import format_duration
from tasks.alert_rules import FAILING, AlertState, flow_run_url
from tasks.retry import IO_RETRIES, PermanentFailure, with_retries

log = logging.getLogger(__name__)

EscalationChannel = Literal["email", "slack"]


@dataclass(frozen=True)
class EscalationStep:
    """One tier to tell about one item's open episode (``kind`` escalate) or its resolve (``resolve``)."""

    kind: Literal["escalate", "resolve"]
    routine: str
    item: str
    opened_at: datetime
    tier: int  # 1-based position in notifications.escalate
    after: float
    to: tuple[str, ...]
    mention: str | None
    status: str
    checks: tuple[Check, ...]
    as_of: datetime
    flow_run_id: str | None

    @property
    def key(self) -> dict[str, Any]:
        return {"routine": self.routine, "item": self.item, "opened_at": self.opened_at, "tier": self.tier}

    @property
    def label(self) -> str:
        return f"tier{self.tier}:{self.item}"

    @property
    def open_for(self) -> float:
        return (self.as_of - self.opened_at).total_seconds()

    @property
    def title(self) -> str:
        if self.kind == "resolve":
            return f"RESOLVED (escalated to tier {self.tier}): {self.routine} / {self.item} is {self.status}"
        return (
            f"ESCALATED (tier {self.tier}, failing for {format_duration(max(self.open_for, 0))}): "
            f"{self.routine} / {self.item} is {self.status}"
        )


@dataclass(frozen=True)
class EscalationOutcome:
    """What one run did about one tier: ``channels`` tried this time (those that landed before are not)."""

    step: EscalationStep
    channels: tuple[str, ...]
    delivered: bool
    error: str | None = None

    @property
    def item(self) -> str:
        return self.step.item


# -- planning: pure ------------------------------------------------------------------------------


def open_episodes(states: Sequence[AlertState]) -> dict[str, datetime]:
    """Item → opened_at of every item whose alert is open and failing after this run."""
    return {s.item: s.opened_at for s in states if s.is_open and s.status in FAILING and s.opened_at is not None}


def plan_escalations(
    states: Sequence[AlertState],
    result: RoutineResult,
    tiers: Sequence[EscalationTier],
    done: Collection[tuple[str, datetime, int]],
) -> list[EscalationStep]:
    """The tiers to tell now: for each item open and failing after this run, each tier whose ``after``
    has passed at ``result.as_of`` and that is not in ``done`` (``(item, opened_at, tier)`` delivered)."""
    items = {item.name: item for item in result.items}
    steps: list[EscalationStep] = []
    for item, opened_at in open_episodes(states).items():
        open_for = (result.as_of - opened_at).total_seconds()
        found = items.get(item)
        status = found.status if found is not None else "fail"
        checks = tuple(c for c in found.checks if c.status != "ok") if found is not None else ()
        for number, tier in enumerate(tiers, start=1):
            if open_for < tier.after or (item, opened_at, number) in done:
                continue
            steps.append(
                EscalationStep(
                    kind="escalate",
                    routine=result.routine,
                    item=item,
                    opened_at=opened_at,
                    tier=number,
                    after=tier.after,
                    to=tuple(tier.to),
                    mention=tier.slack_mention,
                    status=status,
                    checks=checks,
                    as_of=result.as_of,
                    flow_run_id=result.flow_run_id,
                )
            )
    return steps


def plan_resolve_notices(
    states: Sequence[AlertState], result: RoutineResult, escalated: Sequence[Mapping[str, Any]]
) -> list[EscalationStep]:
    """The delivered tiers (``escalated`` rows, not yet told of a resolve) whose episode is over after
    this run: the item is in ``states`` and no longer open and failing since that ``opened_at``."""
    states_by_item = {s.item: s for s in states}
    still_open = open_episodes(states)
    items = {item.name: item for item in result.items}
    steps: list[EscalationStep] = []
    for row in escalated:
        if not row["delivered"] or row.get("resolve_told_at") is not None or row["item"] not in states_by_item:
            continue
        if still_open.get(row["item"]) == row["opened_at"]:
            continue
        found = items.get(row["item"])
        steps.append(
            EscalationStep(
                kind="resolve",
                routine=result.routine,
                item=row["item"],
                opened_at=row["opened_at"],
                tier=row["tier"],
                after=float(row["after_seconds"]),
                to=tuple(row["recipients"] or ()),
                mention=row["mention"],
                status=found.status if found is not None else states_by_item[row["item"]].status,
                checks=tuple(c for c in found.checks if c.status != "ok") if found is not None else (),
                as_of=result.as_of,
                flow_run_id=result.flow_run_id,
            )
        )
    return steps


def step_channels(step: EscalationStep, notifications: Notifications) -> list[EscalationChannel]:
    """The channels a tier is told on: email when it has ``to``; Slack when it has a mention and Slack
    is configured."""
    channels: list[EscalationChannel] = []
    if step.to:
        channels.append("email")
    if step.mention and notifications.slack is not None:
        channels.append("slack")
    return channels


def email_subject_and_body(step: EscalationStep, ui_url: str | None) -> tuple[str, str]:
    lines = [
        step.title,
        "",
        f"Routine: {step.routine}",
        f"Item: {step.item}",
        f"Status: {step.status}",
        f"Failing since: {format_instant(step.opened_at)}",
        f"As of: {format_instant(step.as_of)}",
        f"Escalation tier {step.tier}: told when still failing {format_duration(step.after)} after its trigger",
        "",
    ]
    lines += [f"- {c.check} [{c.status}]: {c.detail}" for c in step.checks]
    link = flow_run_url(ui_url, step.flow_run_id)
    if link:
        lines += ["", f"Flow run: {link}"]
    return redact(f"[opsflow] {step.title}"), redact("\n".join(lines) + "\n")


def slack_text(step: EscalationStep, ui_url: str | None) -> str:
    """The Slack message: the mention first, then the title and the checks."""
    parts = [f"{c.check}: {c.detail}" if c.detail else c.check for c in step.checks]
    text = f"{step.mention} {step.title}" + (" — " + "; ".join(parts) if parts else "")
    link = flow_run_url(ui_url, step.flow_run_id)
    if link:
        text += f" <{link}|flow run>"
    return redact(text)[:3000]


# -- delivery: thin tasks --------------------------------------------------------------------------


def send_escalation(
    channel: EscalationChannel, step: EscalationStep, notifications: Notifications, ui_url: str | None
) -> None:
    """Tell one tier on one channel, one attempt; Permanent/TransientFailure as :mod:`tasks.notify`."""
    from tasks.notify import compose_email, post_json, send_message

    if channel == "email":
        settings = notifications.email
        if settings is None:
            raise PermanentFailure(
                f"email: notifications.email is not configured, so escalation tier {step.tier} cannot email "
                f"{', '.join(step.to)}"
            )
        subject, body = email_subject_and_body(step, ui_url)
        send_message(settings, compose_email(settings.sender, step.to, subject, body))
        return
    slack = notifications.slack
    if slack is None:
        raise PermanentFailure("slack: not configured (notifications.slack)")
    url = resolve_secret(slack.webhook_url) or ""
    payload: dict[str, Any] = {"text": slack_text(step, ui_url)}
    if slack.channel:
        payload["channel"] = slack.channel
    post_json("slack", url, payload)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="escalate[{step.label}:{channel}]")
def deliver_escalation(
    channel: EscalationChannel, step: EscalationStep, notifications: Notifications, ui_url: str | None
) -> None:
    """Tell one escalation tier of an open failure on one channel."""
    send_escalation(channel, step, notifications, ui_url)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="escalate-resolve[{step.label}:{channel}]")
def deliver_resolve_notice(
    channel: EscalationChannel, step: EscalationStep, notifications: Notifications, ui_url: str | None
) -> None:
    """Tell an escalated tier that the failure resolved, on one channel."""
    send_escalation(channel, step, notifications, ui_url)


# -- the entry point: called by tasks.notify.send_alerts ---------------------------------------------


def escalate(
    result: RoutineResult,
    states: Sequence[AlertState],
    notifications: Notifications,
    store: OpsStore,
    ui_url: str | None,
    clock: Any = None,
) -> list[EscalationOutcome]:
    """Claim, deliver and record this run's escalations and resolve notices for ``result``'s items
    (``states``: their alert states after this run). Never raises for a channel: a delivery that did
    not land is an outcome with ``delivered`` False, tried again by the next run."""
    tiers = notifications.escalate
    if not tiers:
        return []
    now = clock or (lambda: datetime.now(UTC))
    episodes = open_episodes(states)
    rows = with_retries(
        lambda: escalation_rows(store, result.routine, [s.item for s in states], episodes), "read the escalations"
    )
    done = {(r["item"], r["opened_at"], r["tier"]) for r in rows if r["delivered"]}
    steps = plan_escalations(states, result, tiers, done) + plan_resolve_notices(states, result, rows)
    claimed: list[tuple[EscalationStep, list[EscalationChannel], list[str]]] = []
    for step in steps:
        row = {
            **step.key,
            "after_seconds": step.after,
            "recipients": list(step.to),
            "mention": step.mention,
            "as_of": step.as_of,
            "flow_run_id": step.flow_run_id,
        }
        if step.kind == "escalate":
            got = with_retries(lambda row=row: claim_escalation(store, row, now()), "claim an escalation")
            sent = list(got["sent"]) if got else []
        else:
            got = with_retries(lambda step=step: claim_resolve_notice(store, step.key, now()), "claim a resolve notice")
            sent = list(got["resolve_sent"]) if got else []
        if got is None:
            continue  # delivered, or another run is delivering it
        claimed.append((step, step_channels(step, notifications), sent))
    submitted = []
    for step, channels, sent in claimed:
        deliver = deliver_escalation if step.kind == "escalate" else deliver_resolve_notice
        futures = [(c, deliver.submit(c, step, notifications, ui_url)) for c in channels if c not in sent]
        submitted.append((step, channels, sent, futures))
    outcomes: list[EscalationOutcome] = []
    for step, channels, sent, futures in submitted:
        errors: list[str] = []
        landed = list(sent)
        for channel, future in futures:
            future.wait()
            if future.state.is_completed():
                landed.append(channel)
            else:
                errors.append(redact(_failure_reason(future.state)))
        if not channels:
            errors.append(f"escalation tier {step.tier} tells no one: its slack_mention needs notifications.slack")
        delivered = bool(channels) and all(c in landed for c in channels)
        error = "; ".join(errors) or None
        if error:
            log.warning(
                "escalation %s of %s/%s (tier %d) not delivered: %s",
                step.kind,
                step.routine,
                step.item,
                step.tier,
                error,
            )
        record = record_escalation if step.kind == "escalate" else record_resolve_notice
        with_retries(
            lambda step=step, landed=landed, delivered=delivered, error=error, record=record: record(
                store, step.key, landed, delivered, error, now()
            ),
            "record an escalation",
        )
        if delivered:
            log.info(
                "%s/%s: escalation tier %d told %s (%s)",
                step.routine,
                step.item,
                step.tier,
                "of the resolve" if step.kind == "resolve" else "it is still failing",
                ", ".join(channels),
            )
        outcomes.append(EscalationOutcome(step, tuple(c for c, _ in futures), delivered, error))
    return outcomes


def _failure_reason(state: Any) -> str:
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        return str(outcome) or type(outcome).__name__
    return state.message or "delivery failed"
