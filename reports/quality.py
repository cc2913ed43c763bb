"""Data quality for people: the markdown report of a ``data-quality`` run (artifact ``data-quality``).

Pure rendering. A headline, then per table its row count, a link to its Data Docs page, and every check
with its unexpected count and percentage; under a failing expectation, the unexpected values Great
Expectations sampled.

>>> from datetime import UTC, datetime
>>> from opsflow.results import Check
>>> nulls = Check(check="expect_column_values_to_not_be_null:user_id", status="fail", detail="3 of 1,000 rows null",
...               unexpected_count=3, unexpected_percent=0.3, observed_value=None, sample=[None, None, None])
>>> item = Item(name="events", checks=[nulls], metrics={"row_count": 1000, "table": "public.events"})
>>> result = RoutineResult(routine="data-quality", as_of=datetime(2026, 11, 22, 5, 30, tzinfo=UTC), items=[item])
>>> print(quality_markdown(result), end="")
# Data quality: FAIL
<BLANKLINE>
As of 2026-11-22T05:30:00Z: 0 of 1 tables pass.
<BLANKLINE>
## events: ❌ fail
<BLANKLINE>
`public.events`, 1,000 rows.
<BLANKLINE>
| check | status | unexpected | detail |
|---|---|---|---|
| expect_column_values_to_not_be_null:user_id | ❌ fail | 3 (0.3%) | 3 of 1,000 rows null |
<BLANKLINE>
Unexpected values of `expect_column_values_to_not_be_null:user_id` (a sample): `None`, `None`, `None`
"""

from __future__ import annotations

from typing import Any

from opsflow.redact import redact
from opsflow.results import Check, Item, RoutineResult, format_instant

_BADGE = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail", "error": "🛑 error"}
SAMPLE_SHOWN = 10


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|").replace("\n", " ")


def _unexpected(check: Check) -> str:
    extra = check.model_extra or {}
    count, percent = extra.get("unexpected_count"), extra.get("unexpected_percent")
    if count is None:
        return "—"
    return f"{count:,} ({percent:.3g}%)" if isinstance(percent, int | float) else f"{count:,}"


def _sample(check: Check) -> str | None:
    values: list[Any] = (check.model_extra or {}).get("sample") or []
    if check.status == "ok" or not values:
        return None
    shown = ", ".join(f"`{_cell(repr(value) if value is None else str(value))}`" for value in values[:SAMPLE_SHOWN])
    return f"Unexpected values of `{check.check}` (a sample): {shown}"


def _table(item: Item) -> list[str]:
    metrics = item.metrics
    lines = [f"## {_cell(item.name)}: {_BADGE[item.status]}", ""]
    if "row_count" in metrics:
        described = f"`{_cell(str(metrics.get('table', item.name)))}`, {metrics['row_count']:,} rows."
        if metrics.get("data_docs"):
            described += f" [Data Docs]({metrics['data_docs']})"
        lines += [described, ""]
    lines += ["| check | status | unexpected | detail |", "|---|---|---|---|"]
    lines += [f"| {_cell(c.check)} | {_BADGE[c.status]} | {_unexpected(c)} | {_cell(c.detail)} |" for c in item.checks]
    samples = [text for text in (_sample(c) for c in item.checks) if text]
    return lines + (["", *samples] if samples else [])


def quality_markdown(result: RoutineResult) -> str:
    """The report: headline, then one section per table, failing tables first."""
    passing = sum(1 for item in result.items if item.status in ("ok", "warn"))
    lines = [
        f"# Data quality: {result.status.upper()}",
        "",
        f"As of {format_instant(result.as_of)}: {passing} of {len(result.items)} tables pass.",
    ]
    order = {"error": 0, "fail": 1, "warn": 2, "ok": 3}
    for item in sorted(result.items, key=lambda i: (order[i.status], i.name)):
        lines += ["", *_table(item)]
    return "\n".join(lines) + "\n"
