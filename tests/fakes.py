"""Fakes of the resources a routine's work is handed (``tasks.resources.Resources``), for fast tests
of the template and of pure routine logic. The real-server tests stay the integration layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opsflow.config import Config
from opsflow.results import RoutineResult
from opsflow.spool import ProbeSpool
from tasks.resources import Resources


@dataclass
class MemoryStore:
    """The ops store's bookkeeping (results, alert state, delivery log) in memory."""

    url: str = "memory://"
    saved: dict[tuple[str, str, datetime], RoutineResult] = field(default_factory=dict)
    states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def save_result(self, result: RoutineResult, scope: str = "") -> None:
        self.saved[(result.routine, scope, result.as_of)] = result

    def results(self, routine: str, scope: str = "", limit: int = 100) -> list[RoutineResult]:
        found = [r for (name, where, _), r in self.saved.items() if name == routine and where == scope]
        return sorted(found, key=lambda r: r.as_of, reverse=True)[:limit]

    def latest_results(self, routines: Sequence[str], end: datetime | None = None) -> dict[str, RoutineResult]:
        newest: dict[str, RoutineResult] = {}
        for (name, _, as_of), result in self.saved.items():
            if name in routines and (end is None or as_of < end) and (name not in newest or as_of > newest[name].as_of):
                newest[name] = result
        return newest

    def incidents(self, service: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        return []  # no probe history in memory

    def alert_states(self, routine: str) -> list[dict[str, Any]]:
        return [dict(state) for (name, _), state in self.states.items() if name == routine]

    def save_alert_outcome(self, states: Sequence[Mapping[str, Any]], deliveries: Sequence[Mapping[str, Any]]) -> None:
        for state in states:
            self.states[(state["routine"], state["item"])] = dict(state)
        self.deliveries += [dict(d) for d in deliveries]


def fake_resources(store: MemoryStore, home: Path, now: datetime) -> Any:
    """``Routine(resources=...)``: the in-memory store, a fixed clock, spool and work dir under ``home``."""

    def build(config: Config) -> Resources:
        return Resources(
            open_store=lambda: store,
            spool=ProbeSpool(home / "spool.jsonl"),
            workdir=home / "work",
            clock=lambda: now,
        )

    return build
