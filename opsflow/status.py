"""The at-a-glance status page's snapshot (issue 18): what ``tasks.status_page`` gathers from the ops store
and ``reports.status`` renders. Plain frozen values, no I/O: the page can be rendered (and tested) from a
snapshot built by hand.

The page itself lives at ``$OPSFLOW_HOME/status/index.html`` (:func:`status_page_path`): a file, no server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from opsflow.embedded import home_dir
from opsflow.results import RoutineResult


def status_page_path() -> Path:
    """``$OPSFLOW_HOME/status/index.html``, absolute."""
    return home_dir() / "status" / "index.html"


@dataclass(frozen=True)
class RoutineStatus:
    """One routine's latest stored result (None: no run yet) and the Prefect UI link of that run, if known."""

    name: str
    result: RoutineResult | None = None
    url: str | None = None


@dataclass(frozen=True)
class OpenIncident:
    """An incident still open: its service, when it opened and the last error seen."""

    service: str
    since: datetime
    last_error: str | None = None


@dataclass(frozen=True)
class Expiry:
    """One item of the latest ``expiry-check``: when it expires and how its check judged it."""

    name: str
    status: str
    days_left: float | None
    expires_at: str | None
    source: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Runway:
    """One metric of the latest ``capacity-trends``: days until it crosses its threshold (None: not within a year)."""

    metric: str
    status: str
    days_to_threshold: float | None
    days_to_threshold_low: float | None = None
    crossing_date: str | None = None
    current: float | None = None
    threshold: float | None = None
    unit: str = "number"
    detail: str = ""


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything the status page shows, as of ``generated_at`` (shown in ``timezone``).

    ``expiries`` soonest first; ``runways`` soonest first (no crossing last); ``warn_within_days`` is the
    config's ``expiry.warn_within``: expiries within it are highlighted.
    """

    generated_at: datetime
    timezone: str
    routines: tuple[RoutineStatus, ...]
    incidents: tuple[OpenIncident, ...] = ()
    expiries: tuple[Expiry, ...] = ()
    runways: tuple[Runway, ...] = ()
    warn_within_days: float = 30.0
    refresh_seconds: int = 60
