"""Incidents from consecutive probe failures (SPEC §6), pure: no I/O.

An incident opens at the first of ``failure_threshold`` consecutive failures
and closes at the next success. Results inside a maintenance window are
skipped when counting; a gap in the data does not break a run.

>>> from datetime import UTC
>>> t0, t1 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC), datetime(2026, 11, 22, 6, 1, tzinfo=UTC)
>>> state = ServiceState(service="api")
>>> state, event = advance(state, checked_at=t0, ok=False, threshold=2, in_maintenance=False)
>>> event is None, state.consecutive_failures
(True, 1)
>>> state, event = advance(state, checked_at=t1, ok=False, threshold=2, in_maintenance=False)
>>> event.kind, event.service, event.at == t1, event.opened_at == t0
('opened', 'api', True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class ServiceState:
    """A service's run of failures and its open incident, carried from one probe run to the next."""

    service: str
    consecutive_failures: int = 0
    first_failure_at: datetime | None = None
    incident_opened_at: datetime | None = None

    @property
    def incident_open(self) -> bool:
        return self.incident_opened_at is not None


@dataclass(frozen=True)
class IncidentEvent:
    kind: Literal["opened", "closed"]
    service: str
    at: datetime
    opened_at: datetime


def advance(
    state: ServiceState, checked_at: datetime, ok: bool, threshold: int, in_maintenance: bool
) -> tuple[ServiceState, IncidentEvent | None]:
    """Fold one probe result into the state; return the new state and the incident it opened or closed."""
    if in_maintenance:
        return state, None
    if ok:
        event = None
        if state.incident_opened_at is not None:
            event = IncidentEvent("closed", state.service, checked_at, state.incident_opened_at)
        return ServiceState(service=state.service), event
    failures = state.consecutive_failures + 1
    first = state.first_failure_at or checked_at
    state = replace(state, consecutive_failures=failures, first_failure_at=first)
    if failures >= threshold and state.incident_opened_at is None:
        state = replace(state, incident_opened_at=first)
        return state, IncidentEvent("opened", state.service, checked_at, first)
    return state, None


def in_maintenance(windows: list[tuple[datetime, datetime]], at: datetime) -> bool:
    """Whether ``at`` falls in one of the ``[start, end)`` windows."""
    return any(start <= at < end for start, end in windows)
