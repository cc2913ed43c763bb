"""Any routine's result as the markdown summary and the table shown in the Prefect UI.

Pure rendering: it is given a result (and what the alerts did) and returns text
and rows; ``tasks/artifacts.py`` publishes them.

>>> from datetime import UTC, datetime
>>> from opsflow.results import Check, Item
>>> failing = Item(name="orders-db", checks=[Check(check="fresh", status="fail", detail="newest backup is 31h old")])
>>> result = RoutineResult(routine="backup-verification", as_of=datetime(2026, 11, 22, 6, tzinfo=UTC), items=[failing])
>>> print(summary_markdown(result, deliveries=[]), end="")
# backup-verification: FAIL
<BLANKLINE>
As of 2026-11-22T06:00:00Z · 1 items: 0 ok, 0 warn, 1 fail, 0 error
<BLANKLINE>
## Findings
<BLANKLINE>
| item | check | status | detail |
|---|---|---|---|
| orders-db | fresh | ❌ fail | newest backup is 31h old |
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from opsflow.redact import redact
from opsflow.results import RoutineResult, format_instant

_BADGE = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail", "error": "🛑 error"}


class DeliveryLike(Protocol):
    """What the summary needs of an alert delivery (``tasks.notify.Delivery``)."""

    channel: str
    delivered: bool
    error: str | None

    @property
    def alert(self) -> Any: ...


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return redact(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(result: RoutineResult, deliveries: Sequence[DeliveryLike] = ()) -> str:
    """Headline, counts, every check that is not ok, then every alert delivery and its outcome."""
    counts = result.summary
    lines = [
        f"# {result.routine}: {result.status.upper()}",
        "",
        f"As of {format_instant(result.as_of)} · {len(result.items)} items: {counts.ok} ok, {counts.warn} warn, "
        f"{counts.fail} fail, {counts.error} error",
        "",
    ]
    findings = [(item.name, check) for item in result.items for check in item.checks if check.status != "ok"]
    if findings:
        lines += ["## Findings", "", "| item | check | status | detail |", "|---|---|---|---|"]
        lines += [f"| {_cell(n)} | {_cell(c.check)} | {_BADGE[c.status]} | {_cell(c.detail)} |" for n, c in findings]
    else:
        lines.append("Every check passed.")
    return "\n".join(lines) + "\n" + deliveries_markdown(deliveries)


def what_if_markdown(as_of: datetime) -> str:
    """The note a what-if run (an explicit ``as_of`` far from now, SPEC §7) appends to its summary.

    >>> from datetime import UTC, datetime
    >>> print(what_if_markdown(datetime(2026, 11, 20, 6, tzinfo=UTC)), end="")
    <BLANKLINE>
    > what-if run as of 2026-11-20T06:00:00Z: no alerts sent, alert state unchanged
    """
    return f"\n> what-if run as of {format_instant(as_of)}: no alerts sent, alert state unchanged\n"


def deliveries_markdown(deliveries: Sequence[DeliveryLike]) -> str:
    """The alerts this run sent and whether each landed (empty when it sent none)."""
    if not deliveries:
        return ""
    lines = ["", "## Alerts", "", "| item | alert | channel | delivered | error |", "|---|---|---|---|---|"]
    lines += [
        f"| {_cell(d.alert.item)} | {d.alert.kind} | {d.channel} | {'yes' if d.delivered else '**no**'} "
        f"| {_cell(d.error)} |"
        for d in deliveries
    ]
    return "\n".join(lines) + "\n"


def escalations_markdown(escalations: Sequence[Any]) -> str:
    """The escalation tiers this run told (``tasks.escalation.EscalationOutcome``: ``step.kind``,
    ``step.item``, ``step.tier``, ``channels``, ``delivered``, ``error``); empty when it told none."""
    if not escalations:
        return ""
    lines = [
        "",
        "## Escalations",
        "",
        "| item | tier | told | channels | delivered | error |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(e.step.item)} | {e.step.tier} | {'resolve' if e.step.kind == 'resolve' else 'still failing'} "
        f"| {_cell(', '.join(e.channels))} | {'yes' if e.delivered else '**no**'} | {_cell(e.error)} |"
        for e in escalations
    ]
    return "\n".join(lines) + "\n"


def checks_table(result: RoutineResult) -> list[dict[str, Any]]:
    """One row per check of every item: the table artifact."""
    return [
        {
            "item": item.name,
            "check": check.check,
            "status": check.status,
            "detail": redact(check.detail),
            "observed": check.observed,
            "expected": check.expected,
        }
        for item in result.items
        for check in item.checks
    ]
