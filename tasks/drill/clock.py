"""The clock: the drill's start (the zero of RTO, the instant of RPO), its timed phases, and :func:`measure`,
the ``rto`` and ``rpo`` checks against their targets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from opsflow.config import Drill
from opsflow.results import Check
from opsflow.units import format_duration
from tasks.drill.common import _check
from tasks.storage import StoredObject


@dataclass(frozen=True)
class DrillClock:
    """The drill's start: a wall-clock instant (for RPO, as_of) and a monotonic reading (for RTO, phases)."""

    started_at: datetime
    started: float

    @classmethod
    def start(cls) -> DrillClock:
        return cls(started_at=datetime.now(UTC), started=time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Phase:
    """One timed step: when it began (monotonic) and how long it took."""

    name: str
    started: float
    seconds: float

    @classmethod
    def since(cls, name: str, started: float) -> Phase:
        return cls(name=name, started=started, seconds=time.monotonic() - started)


# -- measure ---------------------------------------------------------------------------------------------


def measure(
    clock: DrillClock, obj: StoredObject | None, rto_seconds: float | None, drill: Drill, stopped: str | None
) -> list[Check]:
    """``rto`` and ``rpo`` against their targets (SPEC §6)."""
    rto_target, rpo_target = drill.rto_target, drill.rpo_target
    if rto_seconds is None:
        rto = _check("rto", "fail", f"not recovered: {stopped or 'the drill stopped'}", expected=rto_target)
    else:
        status = "ok" if rto_seconds <= rto_target else "fail"
        took = format_duration(round(rto_seconds, 2 if rto_seconds < 60 else 0))
        detail = f"recovered and validated in {took}, target {format_duration(rto_target)}"
        rto = _check("rto", status, detail, observed=round(rto_seconds, 3), expected=rto_target)
    if obj is None:
        rpo = _check("rpo", "fail", "no backup to recover from", expected=rpo_target)
    else:
        rpo_seconds = (clock.started_at - obj.written_at).total_seconds()
        status = "ok" if rpo_seconds <= rpo_target else "fail"
        detail = (
            f"the backup was written {format_duration(max(0, round(rpo_seconds)))} before the drill began: "
            f"that much data would be lost, target {format_duration(rpo_target)}"
        )
        rpo = _check("rpo", status, detail, observed=round(rpo_seconds, 3), expected=rpo_target)
    return [rto, rpo]
