"""The at-a-glance status page (issue 18): gathered from the ops store, written as one file.

Bookkeeping, not a task run (SPEC §1): every routine run refreshes the page after its result is stored
(``flows._routine.finish``), the minute probe included, so gathering costs two queries — the newest result
of each routine (one index probe per routine) and the incidents. Rendering is ``reports.status``'s; it is
passed in as ``render`` (tasks do not import reports, SPEC §2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from opsflow.config import Config
from opsflow.files import write_atomically
from opsflow.results import Item, RoutineResult
from opsflow.status import Expiry, OpenIncident, RoutineStatus, Runway, StatusSnapshot, status_page_path
from tasks.alert_rules import flow_run_url

EXPIRY_ROUTINE = "expiry-check"
CAPACITY_ROUTINE = "capacity-trends"


def gather_status(
    store: Any, config: Config, routines: Sequence[str], now: datetime, ui_url: str | None = None
) -> StatusSnapshot:
    """What the page shows as of ``now``: each of ``routines``' latest result (in that order), the open
    incidents (oldest first), the latest expiry-check's expiries and capacity-trends' runways. Reads only."""
    wanted = list(dict.fromkeys([*routines, EXPIRY_ROUTINE, CAPACITY_ROUTINE]))
    latest: dict[str, RoutineResult] = store.latest_results(wanted)
    statuses = tuple(
        RoutineStatus(
            name=name,
            result=latest.get(name),
            url=flow_run_url(ui_url, latest[name].flow_run_id) if name in latest else None,
        )
        for name in routines
    )
    incidents = tuple(
        OpenIncident(service=row["service"], since=row["opened_at"], last_error=row.get("last_error"))
        for row in store.incidents(open_only=True)
    )
    expiries = latest.get(EXPIRY_ROUTINE)
    capacity = latest.get(CAPACITY_ROUTINE)
    return StatusSnapshot(
        generated_at=now,
        timezone=config.timezone,
        routines=statuses,
        incidents=tuple(sorted(incidents, key=lambda incident: incident.since)),
        expiries=tuple(sorted((expiry_of(item) for item in expiries.items), key=_soonest)) if expiries else (),
        runways=tuple(sorted((runway_of(item) for item in capacity.items), key=_runway_key)) if capacity else (),
        warn_within_days=config.expiry.warn_within / 86400,
    )


def refresh_status_page(
    store: Any,
    config: Config,
    routines: Sequence[str],
    now: datetime,
    ui_url: str | None = None,
    *,
    render: Callable[[StatusSnapshot], str],
) -> Path:
    """Gather, render with ``render`` (``reports.status.render_status_page``) and write
    ``$OPSFLOW_HOME/status/index.html`` atomically (concurrent runs each rename a whole page of their own
    over it); the page's path. Raises what the store or the disk raise."""
    snapshot = gather_status(store, config, routines, now, ui_url)
    return write_atomically(status_page_path(), render(snapshot), what="the status page")


def expiry_of(item: Item) -> Expiry:
    """An expiry-check item as a row of the page."""
    check = item.check_named("expiry")
    return Expiry(
        name=item.name,
        status=item.status,
        days_left=_number(item.metrics.get("days_left")),
        expires_at=_text(item.metrics.get("expires_at")),
        source=_text(item.metrics.get("source")),
        detail=check.detail if check is not None else "",
    )


def runway_of(item: Item) -> Runway:
    """A capacity-trends item as a row of the page."""
    metrics = item.metrics
    check = item.check_named("forecast")
    return Runway(
        metric=item.name,
        status=item.status,
        days_to_threshold=_number(metrics.get("days_to_threshold")),
        days_to_threshold_low=_number(metrics.get("days_to_threshold_low")),
        crossing_date=_text(metrics.get("crossing_date")),
        current=_number(metrics.get("current")),
        threshold=_number(metrics.get("threshold")),
        unit=str(metrics.get("unit") or "number"),
        detail=check.detail if check is not None else "",
    )


def _soonest(expiry: Expiry) -> tuple[bool, float, str]:
    return (expiry.days_left is None, expiry.days_left or 0.0, expiry.name)


def _runway_key(runway: Runway) -> tuple[bool, float, float, str]:
    days, low = runway.days_to_threshold, runway.days_to_threshold_low
    return (days is None, days or 0.0, low if low is not None else float("inf"), runway.metric)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
