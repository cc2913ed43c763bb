"""What expires, for people: the markdown report of an ``expiry-check`` run (artifact ``expiry-check``).

Pure rendering: one table ranked by days left (expired first), with what each thing is and who renews it.

>>> from datetime import UTC, datetime
>>> from opsflow.results import Check
>>> cert = Item(name="api", checks=[Check(check="expiry", status="warn", detail="expires in 20 days (2026-12-25)")],
...             metrics={"days_left": 20, "expires_at": "2026-12-25T12:00:00Z", "source": "tls", "subject": "CN=api"})
>>> contract = Item(name="pagerduty-contract", checks=[Check(check="expiry", status="fail", detail="expired")],
...                 metrics={"days_left": -2, "expires_at": "2026-12-03T23:00:00Z", "source": "date",
...                          "owner": "ops@example.com"})
>>> result = RoutineResult(routine="expiry-check", as_of=datetime(2026, 12, 5, 8, tzinfo=UTC), items=[cert, contract])
>>> print(expiry_markdown(result), end="")
# Expiry: FAIL
<BLANKLINE>
As of 2026-12-05T08:00:00Z: 1 expired or within fail_within, 1 within warn_within, of 2.
<BLANKLINE>
| item | status | days left | expires | source | what | owner | detail |
|---|---|---|---|---|---|---|---|
| pagerduty-contract | ❌ fail | -2 | 2026-12-03T23:00:00Z | date | — | ops@example.com | expired |
| api | ⚠️ warn | 20 | 2026-12-25T12:00:00Z | tls | CN=api | — | expires in 20 days (2026-12-25) |
"""

from __future__ import annotations

import math

from opsflow.redact import redact
from opsflow.results import Item, RoutineResult, format_instant

_BADGE = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail", "error": "🛑 error"}


def _cell(value: object) -> str:
    text = "—" if value in (None, "") else str(value)
    return redact(text).replace("|", "\\|").replace("\n", " ")


def _days_left(item: Item) -> float:
    days = item.metrics.get("days_left")
    return float(days) if isinstance(days, int | float) else -math.inf  # unreadable first: it may be expired


def expiry_markdown(result: RoutineResult) -> str:
    """The report: a headline with counts, then every item ranked by days left."""
    failing = sum(1 for item in result.items if item.status in ("fail", "error"))
    warning = sum(1 for item in result.items if item.status == "warn")
    lines = [
        f"# Expiry: {result.status.upper()}",
        "",
        f"As of {format_instant(result.as_of)}: {failing} expired or within fail_within, "
        f"{warning} within warn_within, of {len(result.items)}.",
        "",
        "| item | status | days left | expires | source | what | owner | detail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in sorted(result.items, key=lambda i: (_days_left(i), i.name)):
        metrics = item.metrics
        what = metrics.get("subject") or metrics.get("kind")
        detail = "; ".join(check.detail for check in item.checks if check.detail)
        lines.append(
            f"| {_cell(item.name)} | {_BADGE[item.status]} | {_cell(metrics.get('days_left'))} | "
            f"{_cell(metrics.get('expires_at'))} | {_cell(metrics.get('source'))} | {_cell(what)} | "
            f"{_cell(metrics.get('owner'))} | {_cell(detail)} |"
        )
    return "\n".join(lines) + "\n"
