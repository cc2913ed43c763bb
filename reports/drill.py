"""A DR drill's result as the markdown drill report shown in the Prefect UI (artifact ``dr-drill-<database>``).

Pure rendering: it is given the drill's result and returns text; the flow
publishes it. Headline, RTO and RPO against their targets, the phase timeline,
every check, and the row counts of the restored tables.

>>> from datetime import UTC, datetime
>>> from opsflow.results import Check
>>> item = Item(
...     name="orders",
...     checks=[Check(check="rto", status="ok", detail="4m12s"), Check(check="rpo", status="ok", detail="6h6m40s")],
...     metrics={"rto_seconds": 252.0, "rto_target_seconds": 1800, "rpo_seconds": 22000, "rpo_target_seconds": 93600},
... )
>>> result = RoutineResult(routine="dr-drill", as_of=datetime(2026, 11, 22, 6, tzinfo=UTC), items=[item])
>>> print(drill_report_markdown(result), end="")  # doctest: +ELLIPSIS
# DR drill orders: OK
<BLANKLINE>
Drill began 2026-11-22T06:00:00Z. RTO is measured from the drill's start ...
<BLANKLINE>
## orders: ✅ ok
<BLANKLINE>
| objective | measured | target | status |
|---|---|---|---|
| RTO (drill start → validated) | 4m12s | 30m | ✅ ok |
| RPO (drill start − backup written) | 6h6m40s | 26h | ✅ ok |
...
"""

from __future__ import annotations

from typing import Any

from opsflow.redact import redact
from opsflow.results import Item, RoutineResult, format_instant
from opsflow.units import format_duration, format_size

_BADGE = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail", "error": "🛑 error"}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return redact(text).replace("|", "\\|").replace("\n", " ")


def _duration(seconds: Any) -> str:
    """Hundredths below a minute, whole seconds above (``3h16m2s``, not ``3h16m2.015s``)."""
    if seconds is None:
        return "—"
    value = float(seconds)
    return format_duration(round(value, 2) if value < 60 else round(value))


def _objective(item: Item, name: str, label: str) -> str:
    check = item.check_named(name)
    measured = item.metrics.get(f"{name}_seconds")
    target = item.metrics.get(f"{name}_target_seconds")
    badge = _BADGE[check.status] if check is not None else ""
    return f"| {label} | {_duration(measured)} | {_duration(target)} | {badge} |"


def drill_item_markdown(item: Item) -> list[str]:
    """The report's lines for one drilled database."""
    metrics = item.metrics
    lines = [f"## {_cell(item.name)}: {_BADGE[item.status]}", ""]
    if metrics.get("backup_key"):
        size = metrics.get("backup_bytes")
        lines += [
            f"Backup `{_cell(metrics['backup_key'])}`"
            + (f" ({format_size(size)})" if isinstance(size, int) else "")
            + f", written {_cell(metrics.get('backup_taken_at'))}; drill began {_cell(metrics.get('started_at'))}.",
            "",
        ]
    if metrics.get("target"):
        lines += [f"Target: {_cell(metrics['target'])}.", ""]
    if metrics.get("target_url"):
        lines += [f"Kept up: connect with `psql '{_cell(metrics['target_url'])}'`.", ""]
    lines += [
        "| objective | measured | target | status |",
        "|---|---|---|---|",
        _objective(item, "rto", "RTO (drill start → validated)"),
        _objective(item, "rpo", "RPO (drill start − backup written)"),
        "",
    ]
    timeline = metrics.get("timeline") or []
    if timeline:
        lines += ["### Timeline", "", "| phase | starts at | seconds |", "|---|---|---|"]
        lines += [
            f"| {_cell(phase['phase'])} | +{phase['start_offset_seconds']:.2f} s | {phase['seconds']:.2f} |"
            for phase in timeline
        ]
        lines.append("")
    lines += ["### Checks", "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {_cell(c.check)} | {_BADGE[c.status]} | {_cell(c.detail)} |" for c in item.checks]
    lines.append("")
    tables = metrics.get("tables") or {}
    if tables:
        tables_check = item.check_named("tables")
        minimum = tables_check.expected if tables_check is not None and isinstance(tables_check.expected, dict) else {}
        lines += ["### Restored tables", "", "| table | rows | minimum |", "|---|---:|---:|"]
        lines += [f"| {_cell(name)} | {rows} | {minimum.get(name, '')} |" for name, rows in tables.items()]
        lines.append("")
    return lines


def drill_report_markdown(result: RoutineResult) -> str:
    """The whole drill report: one section per drilled database."""
    names = ", ".join(item.name for item in result.items)
    lines = [
        f"# DR drill {_cell(names)}: {result.status.upper()}",
        "",
        f"Drill began {format_instant(result.as_of)}"
        + (f" · flow run `{result.flow_run_id}`" if result.flow_run_id else "")
        + ". RTO is measured from the drill's start until the restored database is validated; "
        "RPO is the drill's start minus the time the backup was written.",
        "",
    ]
    for item in result.items:
        lines += drill_item_markdown(item)
    return "\n".join(lines).rstrip("\n") + "\n"
