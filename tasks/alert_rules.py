"""When to alert, and what to say: the pure half of notifications (no I/O).

One alert state per routine and item, advanced by each run's result:

============  =====================  =========================================
previous      now                    alert
============  =====================  =========================================
not open      fail / error           ``trigger``: every channel; PagerDuty pages
                                     unless it paged this item less than
                                     ``page_interval`` ago (a flapping item)
open, paged   fail / error           nothing: no repeat while it stays failed
open, unpaged fail / error           ``page``: PagerDuty only, once the interval
                                     has passed (or the last page did not land)
open          ok / warn              ``resolve``: every channel; PagerDuty
                                     resolves the same ``dedup_key``
not open      warn (was not warn)    ``warn``: Slack and webhook only
not open      ok (was warn)          ``clear``: Slack and webhook only
============  =====================  =========================================

The dedup key is stable per routine and item (``opsflow/ROUTINE/ITEM``),
whichever of its checks failed.

>>> from datetime import UTC
>>> from opsflow.results import Item
>>> failing = Item(name="orders-db", checks=[Check(check="fresh", status="fail", detail="newest backup is 31h old")])
>>> result = RoutineResult(routine="backup-verification", as_of=datetime(2026, 11, 22, 6, tzinfo=UTC), items=[failing])
>>> states, alerts = plan_alerts({}, result, page_interval=3600)
>>> [(a.kind, a.item, a.channels) for a in alerts]
[('trigger', 'orders-db', ('slack', 'pagerduty', 'webhook', 'email'))]
>>> states[0].is_open, states[0].paged, alerts[0].dedup_key
(True, True, 'opsflow/backup-verification/orders-db')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from opsflow.results import Check, RoutineResult, Status

AlertKind = Literal["trigger", "page", "resolve", "warn", "clear"]
Channel = Literal["slack", "pagerduty", "webhook", "email"]

CHANNELS_FOR: dict[AlertKind, tuple[Channel, ...]] = {
    "trigger": ("slack", "pagerduty", "webhook", "email"),
    "page": ("pagerduty",),
    "resolve": ("slack", "pagerduty", "webhook", "email"),
    "warn": ("slack", "webhook"),
    "clear": ("slack", "webhook"),
}
FAILING: frozenset[str] = frozenset({"fail", "error"})
# PagerDuty Events v2 severities: a finding is critical, an item that could not be checked an error.
PAGERDUTY_SEVERITY: dict[str, str] = {"fail": "critical", "error": "error", "warn": "warning", "ok": "info"}


@dataclass(frozen=True)
class AlertState:
    """What opsflow last told the world about one item of one routine."""

    routine: str
    item: str
    status: Status = "ok"
    is_open: bool = False
    opened_at: datetime | None = None
    paged: bool = False
    last_paged_at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    """One notification to deliver, to ``channels`` (those of them that are configured)."""

    kind: AlertKind
    routine: str
    item: str
    status: Status
    previous_status: Status
    checks: tuple[Check, ...]
    as_of: datetime
    flow_run_id: str | None
    channels: tuple[Channel, ...]
    page_suppressed_until: datetime | None = None

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.routine, self.item)

    @property
    def title(self) -> str:
        verb = {"trigger": "FAILING", "page": "FAILING", "resolve": "RECOVERED", "warn": "WARNING", "clear": "OK"}
        return f"{verb[self.kind]}: {self.routine} / {self.item} is {self.status}"

    @property
    def summary(self) -> str:
        """One line: the title and the checks that matter (PagerDuty's limit is 1024 characters)."""
        parts = [f"{c.check}: {c.detail}" if c.detail else c.check for c in self.checks]
        text = self.title + (" — " + "; ".join(parts) if parts else "")
        return text if len(text) <= 1024 else text[:1021] + "..."


def dedup_key(routine: str, item: str) -> str:
    """The PagerDuty dedup key of an item: stable, whichever check failed."""
    return f"opsflow/{routine}/{item}"


def plan_alerts(
    previous: dict[str, AlertState], result: RoutineResult, page_interval: float
) -> tuple[list[AlertState], list[Alert]]:
    """Advance each item's alert state by ``result``; return the new states and the alerts to send.

    ``previous`` maps item names to their last state; ``result.as_of`` is "now".
    The new states assume every PagerDuty delivery lands: :func:`settle` corrects
    them for the ones that did not.
    """
    now = result.as_of
    states: list[AlertState] = []
    alerts: list[Alert] = []
    for item in result.items:
        before = previous.get(item.name) or AlertState(routine=result.routine, item=item.name)
        notable = tuple(c for c in item.checks if c.status != "ok")
        after = replace(before, status=item.status)
        kind: AlertKind | None = None
        suppressed_until: datetime | None = None
        if item.status in FAILING:
            may_page = before.last_paged_at is None or (now - before.last_paged_at).total_seconds() >= page_interval
            if not before.is_open:
                kind = "trigger"
                after = replace(after, is_open=True, opened_at=now, paged=may_page)
                if may_page:
                    after = replace(after, last_paged_at=now)
                elif before.last_paged_at is not None:  # always, when it may not page: it paged before
                    suppressed_until = datetime.fromtimestamp(
                        before.last_paged_at.timestamp() + page_interval, tz=now.tzinfo
                    )
            elif not before.paged and may_page:
                kind = "page"
                after = replace(after, paged=True, last_paged_at=now)
        elif before.is_open:
            kind = "resolve"
            after = replace(after, is_open=False, opened_at=None, paged=False)
        elif item.status == "warn" and before.status != "warn":
            kind = "warn"
        elif item.status == "ok" and before.status == "warn":
            kind = "clear"
        states.append(after)
        if kind is None:
            continue
        channels = CHANNELS_FOR[kind]
        if kind == "trigger" and suppressed_until is not None:
            channels = tuple(c for c in channels if c != "pagerduty")
        if kind == "resolve" and not before.paged:
            channels = tuple(c for c in channels if c != "pagerduty")  # nothing open in PagerDuty
        alerts.append(
            Alert(
                kind=kind,
                routine=result.routine,
                item=item.name,
                status=item.status,
                previous_status=before.status,
                checks=notable,
                as_of=now,
                flow_run_id=result.flow_run_id,
                channels=channels,
                page_suppressed_until=suppressed_until,
            )
        )
    return states, alerts


def settle(state: AlertState, before: AlertState | None, pagerduty_landed: bool) -> AlertState:
    """Correct a planned state when its PagerDuty delivery failed, so the next run tries again.

    A trigger or page that did not land leaves the item open but unpaged; a
    resolve that did not land leaves it open and paged, to be resolved again.
    """
    if pagerduty_landed:
        return state
    if state.is_open:
        return replace(state, paged=False, last_paged_at=before.last_paged_at if before else None)
    return replace(state, is_open=True, paged=True, opened_at=before.opened_at if before else None)


# -- payloads -------------------------------------------------------------------


def flow_run_url(ui_url: str | None, flow_run_id: str | None) -> str | None:
    """Link to the flow run in the Prefect UI, when both are known."""
    if not ui_url or not flow_run_id:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


_EMOJI = {
    "trigger": ":red_circle:",
    "page": ":red_circle:",
    "resolve": ":large_green_circle:",
    "warn": ":large_yellow_circle:",
    "clear": ":white_check_mark:",
}


def slack_payload(alert: Alert, ui_url: str | None, channel: str | None = None) -> dict[str, object]:
    """A Slack incoming-webhook message: header, one line per check, a link to the run."""
    lines = [f"*{c.check}* ({c.status}): {c.detail}" for c in alert.checks] or ["all checks ok"]
    if alert.page_suppressed_until is not None:
        lines.append(f"_flapping: not paging again before {alert.page_suppressed_until.isoformat()}_")
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{alert.title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}},
    ]
    context = [f"routine `{alert.routine}`", f"was {alert.previous_status}", f"as of {alert.as_of.isoformat()}"]
    link = flow_run_url(ui_url, alert.flow_run_id)
    if link:
        context.append(f"<{link}|flow run>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    payload: dict[str, object] = {"text": f"{_EMOJI[alert.kind]} {alert.summary}", "blocks": blocks}
    if channel:
        payload["channel"] = channel
    return payload


def pagerduty_event(alert: Alert, routing_key: str, ui_url: str | None) -> dict[str, object]:
    """A PagerDuty Events API v2 event: ``trigger`` (trigger and page) or ``resolve``."""
    if alert.kind == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.dedup_key}
    event: dict[str, object] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.dedup_key,
        "client": "opsflow",
        "payload": {
            "summary": alert.summary,
            "source": "opsflow",
            "severity": PAGERDUTY_SEVERITY[alert.status],
            "timestamp": alert.as_of.isoformat(),
            "component": alert.item,
            "group": alert.routine,
            "class": ",".join(c.check for c in alert.checks) or alert.status,
            "custom_details": {c.check: {"status": c.status, "detail": c.detail} for c in alert.checks},
        },
    }
    link = flow_run_url(ui_url, alert.flow_run_id)
    if link:
        event["links"] = [{"href": link, "text": "Prefect flow run"}]
        event["client_url"] = link
    return event


def webhook_payload(alert: Alert, ui_url: str | None) -> dict[str, object]:
    """The generic webhook's JSON document: everything a receiver needs to route or deduplicate."""
    return {
        "event": alert.kind,
        "routine": alert.routine,
        "item": alert.item,
        "status": alert.status,
        "previous_status": alert.previous_status,
        "dedup_key": alert.dedup_key,
        "summary": alert.summary,
        "as_of": alert.as_of.isoformat(),
        "flow_run_id": alert.flow_run_id,
        "flow_run_url": flow_run_url(ui_url, alert.flow_run_id),
        "checks": [c.model_dump(mode="json") for c in alert.checks],
    }


def email_subject_and_body(alert: Alert, ui_url: str | None) -> tuple[str, str]:
    """Plain-text email: the subject names routine, item and status; the body lists the checks."""
    lines = [
        alert.title,
        "",
        f"Routine: {alert.routine}",
        f"Item: {alert.item}",
        f"Status: {alert.status} (was {alert.previous_status})",
        f"As of: {alert.as_of.isoformat()}",
        "",
    ]
    lines += [f"- {c.check} [{c.status}]: {c.detail}" for c in alert.checks] or ["All checks ok."]
    link = flow_run_url(ui_url, alert.flow_run_id)
    if link:
        lines += ["", f"Flow run: {link}"]
    return f"[opsflow] {alert.title}", "\n".join(lines) + "\n"
