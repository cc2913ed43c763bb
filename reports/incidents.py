"""Incident records as terminal text (``opsflow incidents``, ``opsflow incidents show ID``): no I/O.

>>> from datetime import UTC, datetime
>>> from opsflow.incident_store import IncidentRecord, TimelineEvent
>>> record = IncidentRecord(7, "api", datetime(2026, 11, 22, 6, 1, 2, tzinfo=UTC),
...                         datetime(2026, 11, 22, 6, 4, 2, tzinfo=UTC), 180.0, 2, 1)
>>> print(render_incidents([record]))
ID  SERVICE  START                    END                      DURATION  ALERTS  ESCALATIONS
7   api      2026-11-22 06:01:02 UTC  2026-11-22 06:04:02 UTC  3m        2       1
>>> events = [TimelineEvent(record.start, "opened", "3 consecutive failures: HTTP 503 at 06:01:02Z")]
>>> print(render_timeline(record, events))
incident 7: api, closed after 3m
  2026-11-22 06:01:02 UTC  opened     3 consecutive failures: HTTP 503 at 06:01:02Z
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from opsflow.incident_store import IncidentRecord, TimelineEvent
from opsflow.redact import redact
from opsflow.units import format_duration

__all__ = ["render_incidents", "render_timeline"]

_OPEN = "open"


def _time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _duration(seconds: float) -> str:
    return format_duration(round(seconds))


def render_incidents(records: Sequence[IncidentRecord], zone: tzinfo = UTC) -> str:
    """One aligned row per incident, oldest first; "no incidents" when there are none."""
    if not records:
        return "no incidents"
    header = ("ID", "SERVICE", "START", "END", "DURATION", "ALERTS", "ESCALATIONS")
    rows = [
        (
            str(r.id),
            redact(r.service),
            _time(r.start, zone),
            _time(r.end, zone) if r.end is not None else _OPEN,
            _duration(r.seconds) + ("" if r.end is not None else " so far"),
            str(r.alerts),
            str(r.escalations),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def render_timeline(record: IncidentRecord, events: Sequence[TimelineEvent], zone: tzinfo = UTC) -> str:
    """The incident's headline, then one line per event in time order."""
    state = (
        f"closed after {_duration(record.seconds)}"
        if record.end is not None
        else f"open for {_duration(record.seconds)} so far"
    )
    lines = [f"incident {record.id}: {redact(record.service)}, {state}"]
    lines += [f"  {_time(e.at, zone)}  {e.event:<9}  {' '.join(redact(e.detail).split())}" for e in events]
    return "\n".join(lines)
