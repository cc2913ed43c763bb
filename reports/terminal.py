"""A routine's result as the human output of ``opsflow run ROUTINE`` (without ``--json``).

Pure rendering: :func:`render_result` is given a :class:`~opsflow.results.RoutineResult`
and the config's timezone and returns the text the CLI prints on stdout — a
headline, the report period and any run-level error, one row per item with that
routine's key figures and, under it, every check that is not ``ok``, then where
each output was written. :func:`render_incomplete` is the one line printed on
stderr when a routine could not complete (exit 3).

With ``rich_terminal`` the table is drawn by ``rich`` with status colours (for a
terminal); without it, it is plain aligned text with no escape codes (for pipes
and files). Every time is shown in the given timezone to the second, and every
text that could carry a secret goes through :func:`opsflow.redact.redact`.

>>> print(render_incomplete("sla-report", "the ops store is unreachable"))
opsflow: sla-report could not complete: the ops store is unreachable
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from opsflow.redact import redact
from opsflow.results import Item, RoutineResult
from opsflow.units import format_duration, format_size

__all__ = ["render_incomplete", "render_result"]

#: rich styles of each status (rich_terminal only).
STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "error": "bold magenta"}

#: How many scalar metrics the generic row of a routine without its own layout shows.
GENERIC_METRICS = 3

_NONE = "—"
# An ISO 8601 instant with an offset (or Z), as tasks write them into details and metrics.
_AWARE_INSTANT = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})(?![\d:])")


# -- small formatters ---------------------------------------------------------------------------


def _line(value: object) -> str:
    """One line of redacted text (a name, a detail, a path)."""
    text = "" if value is None else str(value)
    return " ".join(redact(text).splitlines())


def _local(moment: datetime, zone: tzinfo, *, abbreviation: bool = True) -> str:
    """``2026-11-22 07:00:00 CET``: the instant in ``zone``, to the second."""
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if abbreviation else "%Y-%m-%d %H:%M:%S").strip()


def _parse_instant(value: Any) -> datetime | None:
    """An aware datetime from a datetime or an ISO 8601 string with an offset; None otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else None


def _localize_text(text: str, zone: tzinfo) -> str:
    """Every aware ISO 8601 instant inside ``text`` rewritten in ``zone`` to the second."""

    def local(match: re.Match[str]) -> str:
        moment = _parse_instant(match.group(0))
        return _local(moment, zone) if moment is not None else match.group(0)

    return _AWARE_INSTANT.sub(local, text)


def _number(value: float | int, decimals: int = 2) -> str:
    """``1234`` -> ``1234``; ``0.125`` -> ``0.13``; ``2.0`` -> ``2``."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _duration(seconds: Any, *, minutes_above_hour: bool = False) -> str:
    """A human duration; hundredths below a minute, whole seconds above (whole minutes above an hour if asked)."""
    if not _is_number(seconds):
        return _NONE
    value = float(seconds)
    if minutes_above_hour and abs(value) >= 3600:
        return format_duration(round(value / 60) * 60)
    return format_duration(round(value, 2) if abs(value) < 60 else round(value))


def _milliseconds(value: Any) -> str:
    if not _is_number(value):
        return _NONE
    if value >= 1000:
        return format_duration(round(value / 1000, 2))
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


def _percent(value: Any, decimals: int) -> str:
    return f"{value:.{decimals}f}%" if _is_number(value) else _NONE


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# -- the figures of each routine's row -----------------------------------------------------------


def _backup_figures(item: Item, zone: tzinfo) -> list[str]:
    metrics = item.metrics
    count = metrics.get("count")
    if count == 0:
        return ["no backups"]
    figures = []
    if _is_number(metrics.get("age_seconds")):
        newest = f"newest {_duration(metrics['age_seconds'], minutes_above_hour=True)} old"
        taken = _parse_instant(metrics.get("newest_taken_at"))
        if taken is not None:
            newest += f" (written {_local(taken, zone)})"
        figures.append(newest)
    if _is_number(metrics.get("newest_bytes")):
        figures.append(format_size(metrics["newest_bytes"]))
    if _is_number(count):
        figures.append(_plural(int(count), "backup"))
    return figures


def _probe_figures(item: Item, zone: tzinfo) -> list[str]:
    metrics = item.metrics
    if not metrics:
        return []
    latency = metrics.get("latency_ms")
    code = metrics.get("status_code")
    if metrics.get("ok"):
        prefix = f"HTTP {code}" if code is not None else "connected"
        figures = [f"{prefix} in {_milliseconds(latency)}" if _is_number(latency) else prefix]
    else:
        error = metrics.get("error")
        figures = [_line(error) if error else "down" if code is None else f"down (HTTP {code})"]
    if _is_number(metrics.get("tls_days_left")):
        figures.append(f"TLS {_number(metrics['tls_days_left'], 1)} days left")
    if metrics.get("incident_open"):
        figures.append("incident open")
    return figures


def _sla_figures(item: Item, zone: tzinfo) -> list[str]:
    metrics = item.metrics
    if not metrics:
        return []
    availability = metrics.get("availability_pct")
    slo = metrics.get("slo_availability_pct")
    shown = _percent(availability, 3) if _is_number(availability) else "no data"
    figures = [f"availability {shown}" + (f" (SLO {slo:g}%)" if _is_number(slo) else "")]
    figures.append(f"budget left {_percent(metrics.get('error_budget_remaining_pct'), 1)}")
    figures.append(f"coverage {_percent(metrics.get('coverage_pct'), 1)}")
    figures.append(f"p95 {_milliseconds(metrics.get('latency_p95_ms'))}")
    incidents = metrics.get("incidents")
    if isinstance(incidents, list) and incidents:
        figures.append(f"{_plural(len(incidents), 'incident')}, MTTR {_duration(metrics.get('mttr_seconds'))}")
    return figures


def _drill_figures(item: Item, zone: tzinfo) -> list[str]:
    metrics = item.metrics
    figures = []
    for name in ("rto", "rpo"):
        measured = metrics.get(f"{name}_seconds")
        target = metrics.get(f"{name}_target_seconds")
        if measured is None and target is None:
            continue
        figures.append(f"{name.upper()} {_duration(measured)} (target {_duration(target)})")
    taken = _parse_instant(metrics.get("backup_taken_at"))
    if taken is not None:
        figures.append(f"backup written {_local(taken, zone)}")
    return figures


def _generic_value(name: str, value: Any, zone: tzinfo) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        return _duration(value) if name.endswith("_seconds") else _number(value)
    moment = _parse_instant(value)
    if moment is not None:
        return _local(moment, zone)
    return _line(value)


def _generic_figures(item: Item, zone: tzinfo) -> list[str]:
    scalars = [
        (name, value)
        for name, value in item.metrics.items()
        if isinstance(value, str | int | float | bool) and not (isinstance(value, float) and not math.isfinite(value))
    ]
    return [f"{_line(name)} {_generic_value(name, value, zone)}" for name, value in scalars[:GENERIC_METRICS]]


@dataclass(frozen=True)
class _Layout:
    item_label: str
    figures: Callable[[Item, tzinfo], list[str]]


_LAYOUTS: dict[str, _Layout] = {
    "backup-verification": _Layout("backup set", _backup_figures),
    "uptime-probe": _Layout("service", _probe_figures),
    "sla-report": _Layout("service", _sla_figures),
    "dr-drill": _Layout("database", _drill_figures),
}
_GENERIC = _Layout("item", _generic_figures)


# -- the document, then its two renderings --------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    status: str
    name: str
    figures: str
    findings: list[tuple[str, str, str]]  # (status, check, detail) of every check that is not ok


@dataclass(frozen=True)
class _Document:
    headline: str
    status: str
    notes: list[str]  # period and run-level error, under the headline
    item_label: str
    rows: list[_Row]
    outputs: list[str]


def _document(result: RoutineResult, zone: tzinfo) -> _Document:
    counts = result.summary
    headline = " · ".join(
        part
        for part in (
            f"{_line(result.routine)}: {result.status.upper()}",
            f"as of {_local(result.as_of, zone)}",
            f"{_plural(len(result.items), 'item')}: {counts.ok} ok, {counts.warn} warn, {counts.fail} fail, "
            f"{counts.error} error",
            f"flow run {_line(result.flow_run_id)}" if result.flow_run_id else "",
        )
        if part
    )
    notes = []
    if result.period is not None:
        period = result.period
        zone_name = getattr(zone, "key", None) or _local(period.start, zone).rsplit(" ", 1)[-1]
        notes.append(
            f"period {_line(period.label)}: {_local(period.start, zone, abbreviation=False)} → "
            f"{_local(period.end, zone, abbreviation=False)} {zone_name}"
        )
    if result.error:
        notes.append(f"error: {_localize_text(_line(result.error), zone)}")
    layout = _LAYOUTS.get(result.routine, _GENERIC)
    rows = [
        _Row(
            status=item.status,
            name=_line(item.name),
            figures=" · ".join(_localize_text(f, zone) for f in layout.figures(item, zone)) or _NONE,
            findings=[
                (check.status, _line(check.check), _localize_text(_line(check.detail), zone))
                for check in item.checks
                if check.status != "ok"
            ],
        )
        for item in result.items
    ]
    outputs = [f"{_line(kind)}: {_line(path)}" for kind, path in result.outputs.items()]
    return _Document(headline, result.status, notes, layout.item_label, rows, outputs)


def _finding_text(status: str, check: str, detail: str) -> str:
    return f"{status:<5}  {check}: {detail}" if detail else f"{status:<5}  {check}"


def _plain(document: _Document) -> str:
    lines = [document.headline, *document.notes, ""]
    if document.rows:
        status_width = max(len("status"), *(len(row.status) for row in document.rows))
        name_width = max(len(document.item_label), *(len(row.name) for row in document.rows))
        indent = " " * (status_width + 2 + name_width + 2)
        lines.append(f"{'status':<{status_width}}  {document.item_label:<{name_width}}  details")
        for row in document.rows:
            lines.append(f"{row.status:<{status_width}}  {row.name:<{name_width}}  {row.figures}".rstrip())
            lines += [indent + _finding_text(*finding) for finding in row.findings]
    else:
        lines.append("no items")
    if document.outputs:
        lines += ["", *document.outputs]
    return "\n".join(lines) + "\n"


def _rich(document: _Document, width: int) -> str:
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=True,
        force_jupyter=False,
        force_interactive=False,
        color_system="standard",
        width=width,
        height=25,  # with both set, rich uses them as given (with width alone, TERM=dumb means 80 columns)
        legacy_windows=False,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=False,
    )
    console.print(Text(document.headline, style=f"bold {STATUS_STYLE[document.status]}"))
    for note in document.notes:
        console.print(Text(note, style="red" if note.startswith("error: ") else "dim"))
    console.print()
    if document.rows:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, header_style="bold")
        table.add_column("status", no_wrap=True)
        table.add_column(document.item_label, overflow="fold")
        table.add_column("details", overflow="fold")
        for row in document.rows:
            details = Text(row.figures)
            for status, check, detail in row.findings:
                details.append("\n")
                details.append(_finding_text(status, check, detail), style=STATUS_STYLE[status])
            table.add_row(Text(row.status, style=STATUS_STYLE[row.status]), Text(row.name, style="bold"), details)
        console.print(table)
    else:
        console.print(Text("no items", style="dim"))
    if document.outputs:
        console.print()
    for output in document.outputs:
        console.print(Text(output))
    return buffer.getvalue()


# -- API ---------------------------------------------------------------------------------------------


def render_result(result: RoutineResult, timezone: str, *, rich_terminal: bool, width: int = 100) -> str:
    """The human output of one routine run, in ``timezone`` (an IANA name, as in ``opsflow.yaml``).

    ``rich_terminal``: a ``rich`` table with status colours, ``width`` columns wide;
    otherwise plain aligned text without escape codes (``width`` is ignored: a
    pipe or a file gets whole lines). Ends with a newline.
    """
    document = _document(result, ZoneInfo(timezone))
    return _rich(document, width) if rich_terminal else _plain(document)


def render_incomplete(routine: str, reason: str) -> str:
    """The one line printed on stderr when ``routine`` could not complete (exit 3), without a newline."""
    return f"opsflow: {_line(routine)} could not complete: {_line(reason).strip() or 'no reason given'}"
