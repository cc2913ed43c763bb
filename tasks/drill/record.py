"""The item: :class:`DrillRecord` (what the drill found, step by step, turned into the item at the end),
the ``cleanup`` check, the target's metrics, and the item of a refused drill."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opsflow.config import Database
from opsflow.errors import UsageError
from opsflow.redact import first_line
from opsflow.results import Check, Item, format_instant
from tasks.drill.clock import DrillClock, Phase, measure
from tasks.drill.common import CHECK_ORDER, _check
from tasks.drill.leftovers import LeftoverReport, Teardown
from tasks.drill.names import safe_url
from tasks.drill.restore import Restored
from tasks.drill.targets import Target, TargetPlan
from tasks.drill.validate import Validation
from tasks.retry import PermanentFailure
from tasks.routine import Finding
from tasks.storage import StoredObject


class DrillStopped(Exception):
    """The drill cannot go on (raised by :meth:`DrillRecord.run` and :meth:`DrillRecord.note`); teardown still runs."""


@dataclass
class DrillRecord:
    """What the drill found so far, step by step; turned into the item at the end.

    The flow runs each step through :meth:`run` (a task that raised becomes a
    ``fail``/``error`` check and stops the drill) and :meth:`note` (a step's
    checks and timing; a failed restore stops the drill).
    """

    database: Database
    clock: DrillClock
    checks: list[Check] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    stopped: str | None = None  # why the drill did not recover, when it did not
    backup: StoredObject | None = None
    target: Target | None = None
    tables: dict[str, int] = field(default_factory=dict)
    rto_seconds: float | None = None

    def run(self, step: Any, check: str, *args: Any, phase: str | None = None) -> Any:
        """Run the task ``step``; its value, or (recording why) :class:`DrillStopped` when it failed."""
        started = time.monotonic()
        state = step(*args, return_state=True)
        if phase is not None:
            self.phases.append(Phase.since(phase, started))
        return self.settle(state, check)

    def wait(self, future: Any, check: str) -> Any:
        """The value of a submitted task, like :meth:`run`."""
        future.wait()
        return self.settle(future.state, check)

    def settle(self, state: Any, check: str) -> Any:
        if state.is_completed():
            return self.note(state.result())
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, Finding):  # the step ran and found a problem: its checks say which
            return self.note(outcome.payload)
        exc = outcome if isinstance(outcome, BaseException) else None
        reason = first_line(exc) if exc is not None else (state.message or "failed")
        status = "fail" if exc is None or isinstance(exc, PermanentFailure | UsageError) else "error"
        self.checks.append(_check(check, status, reason if status == "fail" else f"could not be checked: {reason}"))
        self.stopped = f"the drill stopped at {check}: {reason}"
        raise DrillStopped(self.stopped)

    def note(self, outcome: Any) -> Any:
        """Record what a step returned (its checks, its phase, the backup, the target, the tables)."""
        if isinstance(outcome, StoredObject):
            self.backup = outcome
        if isinstance(outcome, Target):
            self.target = outcome
        if isinstance(outcome, Validation):
            self.tables = dict(outcome.tables)
        phase = getattr(outcome, "phase", None)
        if isinstance(phase, Phase):
            self.phases.append(phase)
        self.checks += list(getattr(outcome, "checks", []))
        if isinstance(outcome, Restored):
            self.checks.append(outcome.check)
            if not outcome.ok:
                self.stopped = f"the restore failed: {outcome.check.detail}"
                raise DrillStopped(self.stopped)
        return outcome

    def recovered(self) -> None:
        """Validation has finished: RTO ends here."""
        self.rto_seconds = self.clock.elapsed()

    def item(self, cleanup: Check, cleaned_up: bool, extra: Mapping[str, Any] | None = None) -> Item:
        drill, obj = self.database.drill, self.backup
        checks = [*self.checks, *measure(self.clock, obj, self.rto_seconds, drill, self.stopped), cleanup]
        checks.sort(key=_check_rank)
        seconds = {phase.name: round(phase.seconds, 3) for phase in self.phases}
        rpo = round((self.clock.started_at - obj.written_at).total_seconds(), 3) if obj else None
        metrics: dict[str, Any] = {
            "backup_key": obj.key if obj else None,
            "backup_taken_at": format_instant(obj.written_at) if obj else None,
            "backup_bytes": obj.size if obj else None,
            "rto_seconds": round(self.rto_seconds, 3) if self.rto_seconds is not None else None,
            "rpo_seconds": rpo,
            "rto_target_seconds": drill.rto_target,
            "rpo_target_seconds": drill.rpo_target,
            "download_seconds": seconds.get("download"),
            "restore_seconds": seconds.get("restore"),
            "validate_seconds": seconds.get("validate"),
            "target_seconds": seconds.get("create target"),
            "teardown_seconds": seconds.get("teardown"),
            "tables": dict(self.tables),
            "cleaned_up": cleaned_up,
            "started_at": format_instant(self.clock.started_at),
            "timeline": [
                {
                    "phase": phase.name,
                    "start_offset_seconds": round(phase.started - self.clock.started, 3),
                    "seconds": round(phase.seconds, 3),
                }
                for phase in self.phases
            ],
            **(extra or {}),
        }
        return Item(name=self.database.name, checks=checks, metrics=metrics)

    def settle_teardown(self, state: Any) -> Teardown:
        """The teardown's outcome (a failed teardown task is a problem, not a crash)."""
        if state.is_completed():
            return self.note(state.result())  # type: ignore[no-any-return]
        outcome = state.result(raise_on_failure=False)
        reason = first_line(outcome) if isinstance(outcome, BaseException) else (state.message or "failed")
        return Teardown(removed=[], problems=[f"teardown failed: {reason}"], phase=Phase("teardown", 0.0, 0.0))


def settle_leftovers(state: Any) -> LeftoverReport:
    """The leftover sweep's report (a sweep that failed is noted, and the drill goes on)."""
    if state.is_completed():
        return state.result()  # type: ignore[no-any-return]
    outcome = state.result(raise_on_failure=False)
    reason = first_line(outcome) if isinstance(outcome, BaseException) else (state.message or "failed")
    return LeftoverReport(problems=[f"the sweep for leftovers failed: {reason}"])


def target_metrics(plan: TargetPlan, target: Target | None) -> dict[str, Any]:
    """Where the drill restored to; with ``--keep``, how to connect (no password)."""
    metrics: dict[str, Any] = {
        "target": target.description if target else plan.kind,
        "target_database": plan.scratch,
        "workdir": str(plan.workdir),
    }
    if plan.keep and target is not None:
        metrics["target_url"] = safe_url(target.url)
    return metrics


def _check_rank(check: Check) -> int:
    for index, prefix in enumerate(CHECK_ORDER):
        if check.check == prefix or (prefix.endswith(":") and check.check.startswith(prefix)):
            return index
    return len(CHECK_ORDER)


def cleanup_check(plan: TargetPlan | None, outcome: Teardown | None, leftovers: LeftoverReport | None) -> Check:
    """``cleanup``: what the drill removed (its own target, and leftovers of earlier drills)."""
    earlier = leftovers.describe() if leftovers else ""
    suffix = f"; {earlier}" if earlier else ""
    if plan is None:
        return _check("cleanup", "fail" if leftovers and leftovers.problems else "ok", f"nothing created{suffix}")
    if outcome is None:
        return _check("cleanup", "fail", f"teardown did not run: {plan.workdir} and {plan.scratch} may remain{suffix}")
    if outcome.problems:
        return _check("cleanup", "fail", "; ".join(outcome.problems) + suffix, observed=outcome.removed)
    if plan.keep:
        detail = f"kept on request (--keep): {plan.scratch}; remove it with: opsflow drill {plan.database} --cleanup"
        return _check("cleanup", "ok", detail + suffix)
    status = "warn" if leftovers and leftovers.problems else "ok"
    return _check("cleanup", status, "; ".join(outcome.removed) + suffix, observed=outcome.removed)


def refused_item(database: Database, reason: str) -> Item:
    """The item of a drill refused before anything was created (its target is a source or the store)."""
    return Item(
        name=database.name,
        checks=[_check("target", "fail", reason)],
        metrics={"cleaned_up": True, "tables": {}, "rto_seconds": None, "rpo_seconds": None},
    )
